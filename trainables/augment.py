"""Training augmentation and normalisation from config, with torchvision transforms v2.

Geometric transforms move an image and its mask together (tv_tensors.Mask); colour jitter
touches the image only.
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from trainables.registry import CHOICES

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NORMALIZE_CHOICES = CHOICES["data/normalize"]


def normalization(cfg: dict, images: np.ndarray, train_idx: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean/std: the training split's own (sampled) or ImageNet's."""
    channels = cfg["data/channels"]
    if cfg["data/normalize"] == "imagenet":
        if channels == 3:
            return list(IMAGENET_MEAN), list(IMAGENET_STD)
        return [float(np.mean(IMAGENET_MEAN))], [float(np.mean(IMAGENET_STD))]
    if cfg["data/normalize"] != "dataset":
        raise ValueError(
            f"data/normalize={cfg['data/normalize']!r} is not known; accepted: {', '.join(NORMALIZE_CHOICES)}."
        )
    sample = np.sort(np.random.default_rng(0).permutation(train_idx)[:512])
    pixels = np.asarray(images[sample], dtype=np.float64).reshape(-1, channels) / 255.0
    return pixels.mean(0).tolist(), np.maximum(pixels.std(0), 1e-3).tolist()


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


class ArrayDataset(torch.utils.data.Dataset):
    """Samples from the decoded uint8 arrays: (image, label) or (image, mask, label).

    A label is a class index, or a float multi-hot vector for multi-label data.
    """

    def __init__(self, images, labels, indices, transform, masks=None):
        self.images, self.labels, self.masks = images, labels, masks
        self.indices, self.transform = np.asarray(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        j = int(self.indices[i])
        image = tv_tensors.Image(torch.from_numpy(np.array(self.images[j])).permute(2, 0, 1))
        label = torch.tensor(self.labels[j], dtype=torch.float32) if self.labels.ndim == 2 else int(self.labels[j])
        if self.masks is None:
            return self.transform(image), label
        mask = tv_tensors.Mask(torch.from_numpy(np.array(self.masks[j]))[None])
        image, mask = self.transform(image, mask)
        return image, mask.float(), label
