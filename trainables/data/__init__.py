"""Data sets for the trainables: layout loaders, generated sets, splits, subsets and the node cache.

    open_dataset(root, image_size, channels, masks, layout, split_files, annotations, on_bad_image,
                 part="search" | "test", test_annotations, test_fraction) -> ImageSet
    train_val_split(ds, val_fraction, seed); fraction_subset(...); shots_subset(...)

A search opens part="search" (train + val only); the held-out test images are opened only
with part="test", for the final evaluation.

Imports only numpy, Pillow, scikit-learn and filelock (never torch); `trainables.data.arrays` (the torch
Dataset over the decoded arrays) is imported on its own.
"""

from .cache import DataError, ImageSet, cache_dir
from .dataset import ON_BAD_IMAGE, PARTS, data_fingerprint, open_dataset
from .layouts import LAYOUTS
from .split import fraction_subset, shots_subset, train_val_split
from .synthetic import (
    ensure_synthetic,
    generate_annotation_list,
    generate_busi,
    generate_covid_radiography,
    generate_image_folder,
    synthetic_root,
)

__all__ = [
    "DataError",
    "ImageSet",
    "LAYOUTS",
    "ON_BAD_IMAGE",
    "PARTS",
    "cache_dir",
    "data_fingerprint",
    "ensure_synthetic",
    "fraction_subset",
    "generate_annotation_list",
    "generate_busi",
    "generate_covid_radiography",
    "generate_image_folder",
    "open_dataset",
    "shots_subset",
    "synthetic_root",
    "train_val_split",
]
