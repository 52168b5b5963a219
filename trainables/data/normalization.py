"""Per-channel normalisation statistics (data/normalize): the training split's own or ImageNet's."""
from __future__ import annotations

from typing import Callable

import numpy as np

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
Stats = tuple[list[float], list[float]]


def dataset_stats(images: np.ndarray, train_idx: np.ndarray, channels: int) -> Stats:
    """Mean and std (at least 1e-3) of the pixels of up to 512 training images drawn with a fixed seed."""
    sample = np.sort(np.random.default_rng(0).permutation(train_idx)[:512])
    pixels = np.asarray(images[sample], dtype=np.float64).reshape(-1, channels) / 255.0
    return pixels.mean(0).tolist(), np.maximum(pixels.std(0), 1e-3).tolist()


def imagenet_stats(images: np.ndarray, train_idx: np.ndarray, channels: int) -> Stats:
    """ImageNet's mean and std; for grayscale images the means over its channels."""
    if channels == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    return [float(np.mean(IMAGENET_MEAN))], [float(np.mean(IMAGENET_STD))]


NORMALIZATIONS: dict[str, Callable[[np.ndarray, np.ndarray, int], Stats]] = {
    "dataset": dataset_stats,
    "imagenet": imagenet_stats,
}


def normalization(cfg: dict, images: np.ndarray, train_idx: np.ndarray) -> Stats:
    """Per-channel (mean, std) under data/normalize."""
    return NORMALIZATIONS[cfg["data/normalize"]](images, train_idx, cfg["data/channels"])
