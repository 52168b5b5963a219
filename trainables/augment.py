"""Training augmentation from config: per image in the loader with torchvision transforms v2, or per batch
on the trial's device with Kornia (aug/where); and the triplet trainable's strong augmentation, per batch.

One rule, augmentation_steps, says which steps a config asks for, in order; each place builds them with its
library. Geometric steps move an image and its mask together (tv_tensors.Mask in the loader, Kornia's "mask"
key on the device, nearest-neighbour); colour jitter touches the image only. On the device every image of a
batch draws its own parameters, from torch's generators (seeded per epoch by the training loop).
"""
from __future__ import annotations

from typing import Callable

import torch
from torchvision.transforms import v2

STRONG = {"aug/crop_scale": 0.5, "aug/hflip": 0.5, "aug/vflip": 0.5, "aug/rotation": 15.0,  # triplet positives
          "aug/brightness": 0.4, "aug/contrast": 0.4}


def augmentation_steps(cfg: dict) -> list[tuple[str, object]]:
    """The training augmentation cfg asks for, in the order it runs: (step, its setting) pairs."""
    steps: list[tuple[str, object]] = []
    if cfg["aug/crop_scale"] < 1.0:
        steps.append(("crop", cfg["aug/crop_scale"]))
    for step in ("hflip", "vflip", "rotation"):
        if cfg[f"aug/{step}"] > 0:
            steps.append((step, cfg[f"aug/{step}"]))
    if cfg["aug/brightness"] > 0 or cfg["aug/contrast"] > 0:
        steps.append(("jitter", (cfg["aug/brightness"], cfg["aug/contrast"])))
    return steps


def _v2_step(step: str, setting, size: int) -> v2.Transform:
    if step == "crop":
        return v2.RandomResizedCrop(size, scale=(setting, 1.0), antialias=True)
    if step == "hflip":
        return v2.RandomHorizontalFlip(setting)
    if step == "vflip":
        return v2.RandomVerticalFlip(setting)
    if step == "rotation":
        return v2.RandomRotation(setting)
    return v2.ColorJitter(brightness=setting[0], contrast=setting[1])


def _kornia_step(step: str, setting, size: int):
    import kornia.augmentation as K

    if step == "crop":
        return K.RandomResizedCrop((size, size), scale=(setting, 1.0), cropping_mode="resample")
    if step == "hflip":
        return K.RandomHorizontalFlip(p=setting)
    if step == "vflip":
        return K.RandomVerticalFlip(p=setting)
    if step == "rotation":
        return K.RandomRotation(setting, p=1.0)
    return K.ColorJitter(brightness=setting[0], contrast=setting[1], p=1.0)


def build_transforms(cfg: dict, mean: list[float], std: list[float], train: bool) -> v2.Transform:
    """The loader's transform of one image (and its mask): for training, the config's augmentation, unless
    aug/where is "device", where the training images leave the loader as they are (uint8, a quarter of the
    bytes to move) for device_augmentation; then float in [0, 1], normalised."""
    if train and cfg["aug/where"] == "device":
        return v2.Identity()
    steps = augmentation_steps(cfg) if train else []
    size = cfg["data/image_size"]
    return v2.Compose([*(_v2_step(step, setting, size) for step, setting in steps),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


class BatchAugmentation:
    """Augmentation steps for a whole batch on its device, each image drawing its own parameters, then
    normalisation by mean and std: images (N, C, H, W) in [0, 1], and masks (N, 1, H, W) or None."""

    def __init__(self, steps: list[tuple[str, object]], size: int, mean: list[float], std: list[float]):
        import kornia.augmentation as K

        built = [_kornia_step(step, setting, size) for step, setting in steps]
        self.pipelines = {keys: K.AugmentationSequential(*built, data_keys=list(keys))
                          for keys in (("input",), ("input", "mask"))} if built else {}
        self.mean, self.std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor, masks: torch.Tensor | None = None):
        if self.pipelines:
            if masks is None:
                images = self.pipelines[("input",)](images)
            else:
                images, masks = self.pipelines[("input", "mask")](images, masks)
        images = (images - self.mean.to(images.device)) / self.std.to(images.device)
        return images if masks is None else (images, masks)


def device_augmentation(cfg: dict, mean: list[float], std: list[float]) -> Callable[[tuple], tuple] | None:
    """With aug/where "device": the training batch's augmentation on the trial's device, a batch
    (images, labels) or (images, masks, labels) with uint8 images in, the same with augmented, normalised
    float images out. None with aug/where "loader" (the loader's transforms augment)."""
    if cfg["aug/where"] != "device":
        return None
    augment = BatchAugmentation(augmentation_steps(cfg), cfg["data/image_size"], mean, std)

    def on_device(batch: tuple) -> tuple:
        images = batch[0].float() / 255
        if len(batch) == 3:
            return (*augment(images, batch[1]), batch[2])
        return augment(images), *batch[1:]
    return on_device


def strong_augmentation(size: int, mean: list[float], std: list[float]) -> Callable[[torch.Tensor], torch.Tensor]:
    """STRONG's crop, flips, rotation and colour jitter, drawn anew for each image of a normalised batch, on
    the batch's device. The batch is mapped back to [0, 1] first (colour jitter clamps to that range) and
    normalised again after."""
    augment = BatchAugmentation(augmentation_steps(STRONG), size, mean, std)
    return lambda images: augment(images * augment.std.to(images.device) + augment.mean.to(images.device))
