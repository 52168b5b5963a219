"""A trial's data: the decoded set a config names, its split and subsets, the datasets on them and the loader."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from trainables.augment import build_transforms, device_augmentation
from trainables.data import ImageSet, fraction_subset, open_dataset, shots_subset, train_val_split
from trainables.data.arrays import ArrayDataset
from trainables.data.normalization import normalization
from trainables.loading import TrialLoader


@dataclass(frozen=True)
class Data:
    """A trial's data: the decoded set, its split and subsets, and the datasets built on them."""

    ds: ImageSet
    train_idx: np.ndarray
    val_idx: np.ndarray
    mean: list[float]
    std: list[float]
    train_set: ArrayDataset
    val_set: ArrayDataset
    positive: int = 1  # binary data: the label of eval/positive_class (default the second class)
    augment: Callable[[tuple], tuple] | None = None  # aug/where "device": the training batch's augmentation

    @property
    def classes(self) -> list[str]:
        return self.ds.classes

    @property
    def multilabel(self) -> bool:
        return self.ds.multilabel

    def class_index(self, name: str, key: str) -> int:
        """The label of class `name`; an unknown name is an error listing the classes."""
        if name not in self.ds.classes:
            raise ValueError(f"{key}={name!r} is not a class of this data set; its classes are: "
                             f"{', '.join(self.ds.classes)}.")
        return self.ds.classes.index(name)


def open_data(cfg: dict, masks: bool, part: str = "search") -> ImageSet:
    """The decoded data set a config names (data/root in data/layout; empty: generated data): its train+val
    images (part "search"), or only its held-out test images (part "test", for the final evaluation)."""
    return open_dataset(cfg["data/root"] or None, cfg["data/image_size"], cfg["data/channels"], masks=masks,
                        layout=cfg["data/layout"], split_files=cfg["data/split_files"],
                        annotations=cfg["data/annotations"], on_bad_image=cfg["data/on_bad_image"], part=part,
                        test_annotations=cfg["data/test_annotations"], test_fraction=cfg["data/test_fraction"])


def prepare_data(cfg: dict, masks: bool) -> Data:
    """Open the data set, split it, draw the fraction / k-shot subset, build the datasets."""
    ds = open_data(cfg, masks)
    train_idx, val_idx = train_val_split(ds, cfg["data/val_fraction"], cfg["data/split_seed"])
    train_idx = fraction_subset(train_idx, ds.labels, cfg["data/fraction"], cfg["data/split_seed"])
    if cfg["data/shots_per_class"]:
        train_idx = shots_subset(train_idx, ds.labels, cfg["data/shots_per_class"], cfg["data/split_seed"], ds.classes)
    mean, std = normalization(cfg, ds.images, train_idx)
    mask_arr = ds.masks if masks else None
    data = Data(ds, train_idx, val_idx, mean, std,
                ArrayDataset(ds.images, ds.labels, train_idx, build_transforms(cfg, mean, std, True), mask_arr),
                ArrayDataset(ds.images, ds.labels, val_idx, build_transforms(cfg, mean, std, False), mask_arr),
                augment=device_augmentation(cfg, mean, std))
    if not cfg["eval/positive_class"]:
        return data
    return replace(data, positive=data.class_index(cfg["eval/positive_class"], "eval/positive_class"))


def with_transform(data: Data, transform: Callable) -> Data:
    """data whose datasets pass every image through `transform` instead of the config's transforms (and
    augmentation, on the device too)."""
    return replace(data, train_set=replace_transform(data.train_set, transform),
                   val_set=replace_transform(data.val_set, transform), augment=None)


def replace_transform(dataset: ArrayDataset, transform: Callable) -> ArrayDataset:
    return ArrayDataset(dataset.images, dataset.labels, dataset.indices, transform, dataset.masks)


def trial_loader(data: Data, cfg: dict, device: torch.device) -> TrialLoader:
    """The trial's loader of the datasets "train" (augmented), "train_plain" (the training subset through the
    validation transforms) and "val"."""
    datasets = {"train": data.train_set, "train_plain": replace_transform(data.train_set, data.val_set.transform),
                "val": data.val_set}
    return TrialLoader(datasets, cfg["train/batch_size"], int(cfg["train/seed"]), cfg["data/workers"],
                       pin=device.type == "cuda")
