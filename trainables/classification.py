"""Image classification on any timm (or Hugging Face) backbone, first N layer groups frozen.

Cross-entropy for single-label data; for multi-label data (annotation lists, e.g. MedFMC
ChestDR) one sigmoid per class with binary cross-entropy, scored by mAP.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from trainables.losses import class_loss
from trainables.loop import Task, fit
from trainables.trial_data import Data
from trainables.metrics import Evaluation, Outputs, classification_score, probabilities
from trainables.models import create_classifier, freeze_classifier


def build(cfg: dict, data: Data) -> nn.Module:
    model = create_classifier(cfg, len(data.classes))
    freeze_classifier(model, cfg)
    return model


def loss(model: nn.Module, batch: tuple, cfg: dict) -> torch.Tensor:
    images, labels = batch
    return class_loss(model(images), labels)


def predict(model: nn.Module, loader, cfg: dict, data: Data, device, distances: bool = False) -> Outputs:
    """True labels and class probabilities of every image, and the mean loss (per class for multi-label)."""
    y_true, probs, loss_sum = [], [], 0.0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        logits = model(images)
        loss_sum += class_loss(logits, labels, reduction="sum").item() / (logits.shape[1] if data.multilabel else 1)
        y_true.append(labels.cpu().numpy())
        probs.append(probabilities(logits, data.multilabel))
    y_true = np.concatenate(y_true)
    return Outputs(loss=loss_sum / len(y_true), y_true=y_true, probs=np.concatenate(probs))


TASK = Task(build=build, loss=loss, evaluate=Evaluation(predict, classification_score), masks=False)


def train(cfg: dict) -> None:
    fit(cfg, TASK)
