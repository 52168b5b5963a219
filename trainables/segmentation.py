"""Binary segmentation on smp architectures and encoders, with a loss from smp.losses."""
from __future__ import annotations

import torch
from torch import nn

from trainables.losses import segmentation_loss
from trainables.loop import Task, fit
from trainables.metrics import MaskStats
from trainables.models import create_segmenter, freeze_encoder


def build(cfg: dict, num_classes: int) -> nn.Module:
    model = create_segmenter(cfg)
    freeze_encoder(model, cfg)
    return model


def loss(model: nn.Module, batch: tuple, cfg: dict) -> torch.Tensor:
    images, masks, _ = batch
    return segmentation_loss(cfg["loss/seg"])(model(images), masks)


def evaluate(model: nn.Module, loader, cfg: dict, num_classes: int, device) -> dict:
    criterion, stats, loss_sum, n = segmentation_loss(cfg["loss/seg"]), MaskStats(), 0.0, 0
    for images, masks, _ in loader:
        images, masks = images.to(device), masks.to(device)
        logits = model(images)
        loss_sum += criterion(logits, masks).item() * len(images)
        n += len(images)
        stats.update(logits, masks)
    return {**stats.compute(), "val/loss": loss_sum / n}


TASK = Task(build=build, loss=loss, evaluate=evaluate, masks=True)


def train(config: dict) -> None:
    fit(config, TASK)
