"""Training augmentation from config, and the triplet trainable's strong augmentation, with torchvision
transforms v2.

Geometric transforms move an image and its mask together (tv_tensors.Mask); colour jitter
touches the image only.
"""
from __future__ import annotations

from typing import Callable

import torch
from torchvision.transforms import v2


def build_transforms(cfg: dict, mean: list[float], std: list[float], train: bool) -> v2.Compose:
    size = cfg["data/image_size"]
    steps: list = []
    if train:
        if cfg["aug/crop_scale"] < 1.0:
            steps.append(v2.RandomResizedCrop(size, scale=(cfg["aug/crop_scale"], 1.0), antialias=True))
        if cfg["aug/hflip"] > 0:
            steps.append(v2.RandomHorizontalFlip(cfg["aug/hflip"]))
        if cfg["aug/vflip"] > 0:
            steps.append(v2.RandomVerticalFlip(cfg["aug/vflip"]))
        if cfg["aug/rotation"] > 0:
            steps.append(v2.RandomRotation(cfg["aug/rotation"]))
        if cfg["aug/brightness"] > 0 or cfg["aug/contrast"] > 0:
            steps.append(v2.ColorJitter(brightness=cfg["aug/brightness"], contrast=cfg["aug/contrast"]))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(steps)


def strong_augmentation(size: int, mean: list[float], std: list[float]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A new random crop, flips, rotation and colour jitter for each image of a normalised batch.

    The batch is mapped back to [0, 1] first (colour jitter clamps to that range) and
    normalised again after.
    """
    mean_t, std_t = torch.tensor(mean), torch.tensor(std)
    transform = v2.Compose([
        v2.Normalize((-mean_t / std_t).tolist(), (1 / std_t).tolist()),
        v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
        v2.RandomHorizontalFlip(0.5),
        v2.RandomVerticalFlip(0.5),
        v2.RandomRotation(15),
        v2.ColorJitter(brightness=0.4, contrast=0.4),
        v2.Normalize(mean, std),
    ])
    return lambda images: torch.stack([transform(image) for image in images])
