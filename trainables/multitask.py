"""Segmentation + classification in one smp model (its aux_params head on the deepest features).

loss = (1 - loss/cls_weight) * segmentation loss + loss/cls_weight * cross-entropy
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from trainables.losses import segmentation_loss
from trainables.loop import Task, fit
from trainables.metrics import MaskStats, classification_metrics
from trainables.models import create_segmenter, freeze_encoder


def build(cfg: dict, num_classes: int) -> nn.Module:
    model = create_segmenter(cfg, num_classes)
    freeze_encoder(model, cfg)
    return model


def check_weight(cfg: dict) -> float:
    w = cfg["loss/cls_weight"]
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"loss/cls_weight={w} is outside the accepted range [0, 1].")
    return w


def joint_loss(cfg: dict, mask_logits, masks, class_logits, labels) -> torch.Tensor:
    w = check_weight(cfg)
    seg = segmentation_loss(cfg["loss/seg"])(mask_logits, masks)
    return (1 - w) * seg + w * nn.functional.cross_entropy(class_logits, labels)


def loss(model: nn.Module, batch: tuple, cfg: dict) -> torch.Tensor:
    images, masks, labels = batch
    mask_logits, class_logits = model(images)
    return joint_loss(cfg, mask_logits, masks, class_logits, labels)


def evaluate(model: nn.Module, loader, cfg: dict, num_classes: int, device) -> dict:
    stats, y_true, y_pred, loss_sum, n = MaskStats(), [], [], 0.0, 0
    for images, masks, labels in loader:
        images, masks, labels = images.to(device), masks.to(device), labels.to(device)
        mask_logits, class_logits = model(images)
        loss_sum += joint_loss(cfg, mask_logits, masks, class_logits, labels).item() * len(images)
        n += len(images)
        stats.update(mask_logits, masks)
        y_true.append(labels.cpu().numpy())
        y_pred.append(class_logits.argmax(1).cpu().numpy())
    return {
        **classification_metrics(np.concatenate(y_true), np.concatenate(y_pred), num_classes),
        **stats.compute(),
        "val/loss": loss_sum / n,
    }


TASK = Task(build=build, loss=loss, evaluate=evaluate, masks=True)


def train(config: dict) -> None:
    fit(config, TASK)
