"""Registry of trainables: name -> import target, known config keys with defaults, metrics.

Importing this module imports no deep-learning library (like Ray's lazy string registries),
so the CLI can validate a space file in a second.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

# Config keys every trainable understands. Flat "group/name" keys, as in space files.
COMMON_DEFAULTS: dict[str, Any] = {
    "data/root": "",               # empty: the embedded synthetic chest X-ray set
    "data/image_size": 64,         # images and masks are resized to a square of this side
    "data/channels": 1,            # 1 = grayscale (X-rays), 3 = RGB
    "data/val_fraction": 0.2,      # stratified train/val split, saved beside the data
    "data/split_seed": 0,          # the split depends on this seed only, never on the trial
    "data/fraction": 1.0,          # stratified subset of the training split, in (0, 1]
    "data/normalize": "dataset",   # "dataset" (its own mean/std) or "imagenet"
    "train/epochs": 2,
    "train/batch_size": 16,
    "train/seed": 0,
    "optim/name": "adam",          # adam | adamw | sgd
    "optim/lr": 5e-5,
    "optim/weight_decay": 1e-6,
    "optim/momentum": 0.9,         # sgd only
    "optim/schedule": "constant",  # constant | cosine
    "aug/hflip": 0.0,              # probabilities of a horizontal / vertical flip
    "aug/vflip": 0.0,
    "aug/rotation": 0.0,           # max degrees of a random rotation
    "aug/brightness": 0.0,         # colour-jitter strengths
    "aug/contrast": 0.0,
    "aug/crop_scale": 1.0,         # RandomResizedCrop min scale; 1.0 disables the crop
}

SPEED_METRICS = ("perf/train_images_per_s", "perf/epoch_s", "perf/train_total_s", "perf/peak_mem_mb")
CLASSIFICATION_METRICS = ("val/accuracy", "val/f1_macro", "val/precision_macro", "val/recall_macro", "val/loss")
SEGMENTATION_METRICS = ("val/dice", "val/iou", "val/loss")

SEGMENTATION_MODEL_DEFAULTS: dict[str, Any] = {
    "model/arch": "unet",           # any smp architecture name, e.g. unet, unetplusplus, fpn
    "model/encoder": "resnet34",    # any smp encoder, or "tu-<timm name>"
    "model/pretrained": "",         # local weights file for the encoder; empty: random init
    "model/frozen_layers": 0,       # freeze the first N encoder groups (stem, then stages)
    "loss/seg": "dice",             # dice | focal | lovasz | tversky | bce | dice_bce
}


@dataclass(frozen=True)
class TrainableSpec:
    """What the search engine needs to know about a trainable without importing it."""

    name: str
    target: str  # "module:function"
    defaults: dict[str, Any]
    metrics: tuple[str, ...]
    needs_masks: bool
    doc: str = field(default="")

    def load(self) -> Callable[[dict], None]:
        module, func = self.target.split(":")
        return getattr(importlib.import_module(module), func)


TRAINABLES: dict[str, TrainableSpec] = {
    spec.name: spec
    for spec in (
        TrainableSpec(
            name="classification",
            target="trainables.classification:train",
            defaults={
                **COMMON_DEFAULTS,
                "model/backbone": "resnet18",  # any timm model name
                "model/pretrained": "",        # local weights file; empty: random init
                "model/frozen_layers": 0,      # freeze the first N timm group_matcher groups
                "model/drop_rate": 0.0,
            },
            metrics=CLASSIFICATION_METRICS + SPEED_METRICS,
            needs_masks=False,
            doc="timm backbone + classifier head, cross-entropy",
        ),
        TrainableSpec(
            name="segmentation",
            target="trainables.segmentation:train",
            defaults={**COMMON_DEFAULTS, **SEGMENTATION_MODEL_DEFAULTS},
            metrics=SEGMENTATION_METRICS + SPEED_METRICS,
            needs_masks=True,
            doc="smp architecture + encoder, binary lung masks, smp.losses",
        ),
        TrainableSpec(
            name="multitask",
            target="trainables.multitask:train",
            defaults={
                **COMMON_DEFAULTS,
                **SEGMENTATION_MODEL_DEFAULTS,
                "loss/cls_weight": 0.5,  # loss = (1 - w) * segmentation + w * classification
            },
            metrics=CLASSIFICATION_METRICS + ("val/dice", "val/iou") + SPEED_METRICS,
            needs_masks=True,
            doc="smp model with the aux_params classification head, weighted joint loss",
        ),
    )
}


def get_trainable(name: str) -> TrainableSpec:
    """Look a trainable up by name; an unknown name is an error listing the known ones."""
    if name not in TRAINABLES:
        raise ValueError(
            f"Unknown trainable {name!r}; known trainables are: {', '.join(sorted(TRAINABLES))}."
        )
    return TRAINABLES[name]


def nested_config(flat: dict[str, Any]) -> dict[str, Any]:
    """{'optim/lr': 1} -> {'optim': {'lr': 1}}: the form Ray Tune hands to a trainable."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *groups, leaf = key.split("/")
        node = nested
        for group in groups:
            node = node.setdefault(group, {})
        node[leaf] = value
    return nested
