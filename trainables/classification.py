"""Image classification on any timm backbone: cross-entropy, first N layer groups frozen."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from trainables.loop import Task, fit
from trainables.metrics import classification_metrics
from trainables.models import create_classifier, freeze_classifier


def build(cfg: dict, num_classes: int) -> nn.Module:
    model = create_classifier(cfg, num_classes)
    freeze_classifier(model, cfg)
    return model


def loss(model: nn.Module, batch: tuple, cfg: dict) -> torch.Tensor:
    images, labels = batch
    return nn.functional.cross_entropy(model(images), labels)


def evaluate(model: nn.Module, loader, cfg: dict, num_classes: int, device) -> dict:
    y_true, y_pred, loss_sum = [], [], 0.0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        logits = model(images)
        loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        y_true.append(labels.cpu().numpy())
        y_pred.append(logits.argmax(1).cpu().numpy())
    y_true = np.concatenate(y_true)
    return {**classification_metrics(y_true, np.concatenate(y_pred), num_classes), "val/loss": loss_sum / len(y_true)}


TASK = Task(build=build, loss=loss, evaluate=evaluate, masks=False)


def train(config: dict) -> None:
    fit(config, TASK)
