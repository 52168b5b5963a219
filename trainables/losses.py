"""Losses: segmentation losses by name from smp.losses (binary masks, logits in) and the classification
loss (the triplet margin loss is trainables.mining's)."""
from __future__ import annotations

import functools
from typing import Callable

import torch
from segmentation_models_pytorch import losses as L
from torch import nn


def _dice_bce() -> Callable:
    dice, bce = L.DiceLoss("binary"), L.SoftBCEWithLogitsLoss()
    return lambda logits, target: dice(logits, target) + bce(logits, target)


def _mse() -> Callable:
    return lambda logits, target: torch.nn.functional.mse_loss(logits.sigmoid(), target)


SEGMENTATION_LOSSES: dict[str, Callable[[], Callable]] = {
    "dice": lambda: L.DiceLoss("binary"),
    "focal": lambda: L.FocalLoss("binary"),
    "lovasz": lambda: L.LovaszLoss("binary"),
    "tversky": lambda: L.TverskyLoss("binary"),
    "bce": L.SoftBCEWithLogitsLoss,
    "dice_bce": _dice_bce,
    "mse": _mse,
}


def check_segmentation_loss(cfg: dict) -> None:
    """loss/seg names a loss of SEGMENTATION_LOSSES (the check of the trainables with masks)."""
    segmentation_loss(cfg["loss/seg"])


@functools.cache
def segmentation_loss(name: str) -> Callable:
    """The loss named `name` (built once per process; the losses hold no state)."""
    if name not in SEGMENTATION_LOSSES:
        raise ValueError(f"loss/seg={name!r} is not known; accepted: {', '.join(SEGMENTATION_LOSSES)}.")
    return SEGMENTATION_LOSSES[name]()


def class_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy for class indices, binary cross-entropy for multi-hot (float) labels."""
    if labels.is_floating_point():
        return nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction=reduction)
    return nn.functional.cross_entropy(logits, labels, reduction=reduction)
