"""Registry of trainables: name -> import target, known config keys with defaults, metrics.

Importing this module imports no deep-learning library (like Ray's lazy string registries),
so the CLI can validate a space file in a second.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from trainables.data.dataset import ON_BAD_IMAGE
from trainables.data.images import CHANNEL_MODES
from trainables.data.layouts import LAYOUTS
from trainables.data.normalization import NORMALIZATIONS
from trainables.optim import OPTIMIZERS, SCHEDULES

DRAW_KEY = "figures/draw"  # a trial's pictures at its last epoch; figures/gradcam adds Grad-CAM to them

# Config keys every trainable understands. Flat "group/name" keys, as in space files.
COMMON_DEFAULTS: dict[str, Any] = {
    "data/root": "",               # empty: generated data in data/layout (see trainables/data)
    "data/layout": "covid_radiography",  # covid_radiography | image_folder | busi | annotation_list
    "data/split_files": "",        # official split lists (e.g. COVID-CT's Data-split), relative to root
    "data/annotations": "trainval.txt",  # annotation_list: the labelled pool, relative to root
    "data/test_annotations": "",   # annotation_list: the official test list (MedFMC *_test*.txt), relative to root
    "data/test_fraction": 0.15,    # without an official test list: share drawn once as the held-out test split
    "data/on_bad_image": "fail",   # corrupt/unreadable image: "fail" the trial or "skip" it and count it
    "data/image_size": 64,         # images and masks are resized to a square of this side
    "data/channels": 1,            # 1 = grayscale (X-rays), 3 = RGB
    "data/val_fraction": 0.2,      # stratified train/val split, saved beside the data
    "data/split_seed": 0,          # the split depends on this seed only, never on the trial
    "data/fraction": 1.0,          # stratified subset of the training split, in (0, 1]
    "data/shots_per_class": 0,     # k-shot: k training images per class (after data/fraction); 0 = all
    "data/normalize": "dataset",   # "dataset" (its own mean/std) or "imagenet"
    "data/workers": 0,             # DataLoader worker processes per trial (persistent; 0 = load in the trial).
                                   # 0 on CPU, where workers only slow the model down; on GPU nodes raise it
                                   # until perf/loader_images_per_s exceeds perf/train_images_per_s
    "train/epochs": 2,
    "train/batch_size": 16,
    "train/seed": 0,
    "train/bf16": False,           # training steps' forward pass under bfloat16 autocast (GPUs since Ampere;
                                   # also runs on CPU); validation stays in float32
    "train/channels_last": False,  # model and images in channels_last memory format (faster convolutions on GPU)
    "train/compile": False,        # the model's forward compiled by torch.compile (inductor) while it trains;
                                   # validation, figures and checkpoints use the plain module (models.compile_training)
    "train/bn_reestimate_images": 1024,  # re-estimate BatchNorm statistics on this many un-augmented training
                                         # images before each validation; 0 = keep the running statistics
    "train/checkpoint_s": 60.0,    # an epoch saves the trial's checkpoint (model and optimiser) when this many
                                   # seconds have passed since the last one, the last epoch always; 0 = every
                                   # epoch. A resumed or retried trial re-trains the epochs after it, identically
    "eval/test": False,            # after the last epoch, evaluate once on the held-out test split (tune-train;
                                   # a search never opens it)
    "eval/bootstrap": 1000,        # bootstrap resamples of the test images for the 95% intervals
    "eval/positive_class": "",     # binary data: the class sensitivity is about (e.g. CT_COVID); "" = the second
    "optim/name": "adam",          # adam | adamw | sgd (classical momentum), from timm's optimizer factory
    "optim/lr": 5e-5,
    "optim/weight_decay": 1e-6,    # on weights only: norm parameters and biases are not decayed
    "optim/momentum": 0.9,         # sgd only
    "optim/schedule": "constant",  # constant | cosine (to 0 over train/epochs) | step, stepped per epoch
    "optim/step_epochs": 1,        # step schedule: multiply the lr by optim/gamma every this many epochs
    "optim/gamma": 0.5,
    "optim/warmup_epochs": 0,      # warm-up: epoch k of the first W (of each triplet phase) trains at
                                   # lr * k / (W + 1); optim/schedule runs over the epochs after them
    "aug/hflip": 0.0,              # probabilities of a horizontal / vertical flip
    "aug/vflip": 0.0,
    "aug/rotation": 0.0,           # max degrees of a random rotation
    "aug/brightness": 0.0,         # colour-jitter strengths
    "aug/contrast": 0.0,
    "aug/crop_scale": 1.0,         # RandomResizedCrop min scale; 1.0 disables the crop
    "aug/where": "loader",         # "loader": per image in the loader (torchvision); "device": per batch on the
                                   # trial's device after the transfer (Kornia), each image its own draw
    DRAW_KEY: True,                # the trial's pictures (trainables.figures) at its last epoch; false skips
                                   # them (about 1 s of CPU each): very large searches, or a quick check
}

# The folder of a trial's checkpoint whose files become artifacts of its MLflow run (trainables.loop.report
# writes them, mlflow_server.tracker uploads those of the last checkpoint when the trial completes).
CHECKPOINT_ARTIFACTS = "artifacts"
MACHINE_PREFIX = "machine/"  # a trial's reported strings that name its machine: tags of its run (trainables.machine)
GRADCAM_KEY = "figures/gradcam"  # Grad-CAM pictures of the final model: off in a search, on in tune-train

SPEED_METRICS = ("perf/train_images_per_s", "perf/loader_images_per_s", "perf/epoch_s", "perf/train_total_s",
                 "perf/peak_mem_mb")
CLASSIFICATION_METRICS = ("val/accuracy", "val/f1_macro", "val/precision_macro", "val/recall_macro",
                          "val/auroc", "val/map", "val/loss", "val/classes_absent")
MASK_METRICS = ("val/dice", "val/iou", "val/miou", "val/dice_gated", "val/iou_gated", "val/miou_gated",
                "val/dice_lesion", "val/dice_pooled", "val/dice_lesion_gated", "val/dice_pooled_gated")
SEGMENTATION_METRICS = MASK_METRICS + ("val/loss",)

# Metric names in words, with their unit or range: axis titles of every chart (metric_words).
METRIC_WORDS = {
    "f1_macro": "macro F1 (0-1)", "accuracy": "accuracy (0-1)", "precision_macro": "macro precision (0-1)",
    "recall_macro": "macro recall (0-1)", "auroc": "AUROC (0-1)", "map": "mean average precision (0-1)",
    "dice": "Dice per image (0-1)", "dice_lesion": "Dice over lesion images (0-1)", "dice_pooled": "pooled Dice (0-1)",
    "iou": "IoU (0-1)", "miou": "mean IoU (0-1)", "loss": "loss", "knn_accuracy": "k-NN accuracy (0-1)",
    "train_images_per_s": "training throughput (images/s)", "loader_images_per_s": "loader throughput (images/s)",
    "epoch_s": "time per epoch (s)", "train_total_s": "total training time (s)", "peak_mem_mb": "peak memory (MB)",
    "hd95": "95th-percentile Hausdorff distance (pixels)", "ece": "expected calibration error (0-1)",
}
SPLIT_WORDS = {"test": "test", "val": "validation", "train": "training", "perf": ""}  # perf/*: measured while training


def metric_words(key: str) -> str:
    """'test/f1_macro' -> 'test macro F1 (0-1)'; unknown names are kept as they are."""
    split, _, name = key.partition("/")
    return f"{SPLIT_WORDS.get(split, split)} {METRIC_WORDS.get(name, name)}".strip()


CLASSIFIER_DEFAULTS: dict[str, Any] = {
    "model/backbone": "resnet18",  # any timm model name, "medtune_cnn" (study C.1) or "hf:<local dir>"
    "model/pretrained": "",        # local weights: a file, a directory, or "hf-hub:<id>" in the local HF cache
    "model/frozen_layers": 0,      # freeze the first N timm group_matcher groups (stem, then blocks)
    "model/drop_rate": 0.0,
}

SEGMENTATION_MODEL_DEFAULTS: dict[str, Any] = {
    "model/arch": "unet",           # any smp architecture name, e.g. unet, unetplusplus, fpn
    "model/encoder": "resnet34",    # any smp encoder, or "tu-<timm name>"
    "model/pretrained": "",         # local weights file for the encoder; empty: random init
    "model/frozen_layers": 0,       # freeze the first N encoder groups (stem, then stages)
    "loss/seg": "dice",             # dice | focal | lovasz | tversky | bce | dice_bce | mse
    "gate/class": "",               # classifier-gated masks: the class without a lesion (e.g. "normal")
}


# Accepted values of the keys that take one of a few names: the names of the tables that implement them
# (torch-free modules). Names implemented in torch code are checked by the trainable's own check from its
# table (loss/seg: trainables.losses, triplet/mining: trainables.mining, clip/mode: trainables.zeroshot).
CHOICES: dict[str, tuple] = {
    "data/layout": LAYOUTS,
    "data/channels": tuple(CHANNEL_MODES),
    "data/normalize": tuple(NORMALIZATIONS),
    "data/on_bad_image": ON_BAD_IMAGE,
    "optim/name": tuple(OPTIMIZERS),
    "optim/schedule": tuple(SCHEDULES),
    "aug/where": ("loader", "device"),
}
# Ranges of numeric keys (low, high, low included, high included). Both are checked before any trial starts.
_INF = float("inf")
RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "data/image_size": (8, _INF, True, True),
    "data/val_fraction": (0, 1, False, False),
    "data/fraction": (0, 1, False, True),
    "data/shots_per_class": (0, _INF, True, True),
    "data/test_fraction": (0, 1, False, False),
    "data/workers": (0, _INF, True, True),
    "train/bn_reestimate_images": (0, _INF, True, True),
    "train/checkpoint_s": (0, _INF, True, True),
    "eval/bootstrap": (1, _INF, True, True),
    "train/epochs": (1, _INF, True, True),
    "train/batch_size": (1, _INF, True, True),
    "optim/lr": (0, _INF, False, True),
    "optim/weight_decay": (0, _INF, True, True),
    "optim/momentum": (0, 1, True, False),
    "optim/step_epochs": (1, _INF, True, True),
    "optim/gamma": (0, 1, False, True),
    "optim/warmup_epochs": (0, _INF, True, True),
    "aug/hflip": (0, 1, True, True),
    "aug/vflip": (0, 1, True, True),
    "aug/rotation": (0, 180, True, True),
    "aug/brightness": (0, _INF, True, True),
    "aug/contrast": (0, _INF, True, True),
    "aug/crop_scale": (0, 1, False, True),
    "model/frozen_layers": (0, _INF, True, True),
    "model/drop_rate": (0, 1, True, False),
    "loss/cls_weight": (0, 1, True, True),
    "triplet/margin": (0, _INF, False, True),
    "triplet/embedding_dim": (1, _INF, True, True),
    "triplet/knn_k": (1, _INF, True, True),
    "clip/probe_c": (0, _INF, False, True),
}


def value_problem(key: str, value: Any) -> str | None:
    """Why `value` is not accepted for `key` (a choice or range violation), or None."""
    if key in CHOICES and value not in CHOICES[key]:
        return f"{key}={value!r} is not accepted; choose one of: {', '.join(map(repr, CHOICES[key]))}."
    if key in RANGES and isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high, low_in, high_in = RANGES[key]
        if not ((low <= value if low_in else low < value) and (value <= high if high_in else value < high)):
            interval = f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
            return f"{key}={value!r} is out of range; accepted values lie in {interval}."
    return None


@dataclass(frozen=True)
class TrainableSpec:
    """What the search engine needs to know about a trainable without importing it."""

    name: str
    target: str  # "module:function"
    defaults: dict[str, Any]
    metrics: tuple[str, ...]
    needs_masks: bool
    doc: str = field(default="")
    check: str = ""  # "module:function" raising ValueError on a config the trainable refuses (preflight
                     # runs it on sampled configs before any trial); "" = no rules beyond CHOICES/RANGES

    def load(self) -> Callable[[dict], None]:
        return _import(self.target)

    def load_check(self) -> Callable[[dict], Any] | None:
        return _import(self.check) if self.check else None

    def function(self) -> Callable[[dict], None]:
        """The function trainable Ray runs: it imports the trainable (and torch) only inside the worker
        and hands it the config flat; the one place where Ray's nested config is flattened. A key the
        config lacks (a trial saved by a version before the key existed, resumed) takes its default."""
        load, defaults = self.load, self.defaults

        def train(config: dict) -> None:
            load()({**defaults, **flat_config(config)})

        train.__name__ = self.name
        return train


def _import(target: str) -> Callable:
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


TRAINABLES: dict[str, TrainableSpec] = {
    spec.name: spec
    for spec in (
        TrainableSpec(
            name="classification",
            target="trainables.classification:train",
            defaults={
                **COMMON_DEFAULTS,
                **CLASSIFIER_DEFAULTS,
                GRADCAM_KEY: False,  # Grad-CAM pictures of the final model (trainables.figures); tune-train: on
            },
            metrics=CLASSIFICATION_METRICS + SPEED_METRICS,
            needs_masks=False,
            doc="timm / Hugging Face backbone + head; cross-entropy, or BCE for multi-label data",
        ),
        TrainableSpec(
            name="segmentation",
            target="trainables.segmentation:train",
            check="trainables.losses:check_segmentation_loss",
            defaults={
                **COMMON_DEFAULTS,
                **SEGMENTATION_MODEL_DEFAULTS,
                "gate/backbone": "resnet18",  # with gate/class: a separate timm classifier trained alongside
            },
            metrics=SEGMENTATION_METRICS + SPEED_METRICS,
            needs_masks=True,
            doc="smp architecture + encoder, binary lung masks, smp.losses",
        ),
        TrainableSpec(
            name="multitask",
            target="trainables.multitask:train",
            check="trainables.losses:check_segmentation_loss",
            defaults={
                **COMMON_DEFAULTS,
                **SEGMENTATION_MODEL_DEFAULTS,
                "loss/cls_weight": 0.5,  # loss = (1 - w) * segmentation + w * classification
            },
            metrics=CLASSIFICATION_METRICS + MASK_METRICS + SPEED_METRICS,
            needs_masks=True,
            doc="smp model with the aux_params classification head, weighted joint loss",
        ),
        TrainableSpec(
            name="zeroshot",
            target="trainables.zeroshot:train",
            check="trainables.zeroshot:check",
            defaults={
                **COMMON_DEFAULTS,
                "data/channels": 3,
                "clip/model": "ViT-B-32",     # open_clip model name (or a name from clip/model_config)
                "clip/model_config": "",      # local open_clip model-config JSON to register first
                "model/pretrained": "",       # local open_clip checkpoint file; empty: random init
                "clip/prompt_set": "plain",   # the name of one set in clip/prompt_sets
                "clip/prompt_sets": '{"plain": ["{}"]}',  # JSON: name -> templates or class -> prompts
                "clip/mode": "zeroshot",      # zeroshot | linear_probe (on frozen image features)
                "clip/probe_c": 1.0,          # inverse L2 strength of the linear probe
            },
            metrics=CLASSIFICATION_METRICS + SPEED_METRICS,
            needs_masks=False,
            doc="open_clip: zero-shot with a prompt set, or a linear probe on frozen image features",
        ),
        TrainableSpec(
            name="triplet",
            target="trainables.triplet:train",
            check="trainables.triplet:check",
            defaults={
                **COMMON_DEFAULTS,
                **CLASSIFIER_DEFAULTS,
                "triplet/supervised_epochs": 1,   # phase 1: supervised fine-tuning
                "triplet/embedding_epochs": 1,    # phase 2: embedding head, triplet loss; phase 3: the rest
                "triplet/margin": 0.5,
                "triplet/mining": "random",       # random | augmented | batch_hard
                "triplet/embedding_dim": 512,
                "triplet/embedding_lr": 5e-4,
                "triplet/classifier_lr": 3e-4,
                "triplet/unfrozen_layers": 1,     # phase 3: last N backbone groups (+ embedding layers) trained too
                "triplet/knn_k": 5,
            },
            metrics=CLASSIFICATION_METRICS + ("val/knn_accuracy",) + SPEED_METRICS,
            needs_masks=False,
            doc="supervised fine-tuning, then a triplet-loss embedding, then a classifier on the embeddings",
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


def flat_config(config: dict, prefix: str = "") -> dict:
    """{'optim': {'lr': 1}} -> {'optim/lr': 1}: Ray Tune's nested config in the flat form trainables receive."""
    flat: dict = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
