"""Data sets for the trainables: loaders, the synthetic set, splits and the node cache.

Imports only numpy, Pillow, scikit-learn and filelock (never torch).
"""

from .cache import DataError, ImageSet, cache_dir
from .covid_radiography import data_fingerprint, open_dataset
from .split import fraction_subset, train_val_split
from .synthetic import ensure_synthetic, generate_covid_radiography, synthetic_root

__all__ = [
    "DataError",
    "ImageSet",
    "cache_dir",
    "data_fingerprint",
    "ensure_synthetic",
    "fraction_subset",
    "generate_covid_radiography",
    "open_dataset",
    "synthetic_root",
    "train_val_split",
]
