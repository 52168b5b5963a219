"""Segmentation losses by name, from smp.losses (binary masks, logits in)."""
from __future__ import annotations

import functools
from typing import Callable

import torch
from segmentation_models_pytorch import losses as L


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


@functools.cache
def segmentation_loss(name: str) -> Callable:
    """The loss named `name` (built once per process; the losses hold no state)."""
    if name not in SEGMENTATION_LOSSES:
        raise ValueError(f"Unknown segmentation loss {name!r}; accepted: {', '.join(SEGMENTATION_LOSSES)}.")
    return SEGMENTATION_LOSSES[name]()
