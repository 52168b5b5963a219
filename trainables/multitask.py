"""Segmentation + classification in one smp model (its aux_params head on the deepest features).

loss = (1 - loss/cls_weight) * segmentation loss + loss/cls_weight * cross-entropy

With gate/class set (study C.3), the predicted mask of an image the head assigns to that
class is blanked; the mask metrics are reported with and without this gating.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from trainables.classification import probabilities
from trainables.losses import segmentation_loss
from trainables.loop import Data, Task, fit
from trainables.metrics import Evaluation, MaskStats, Outputs, classification_metrics, mask_metrics
from trainables.models import create_segmenter, freeze_encoder


def build(cfg: dict, data: Data) -> nn.Module:
    check_weight(cfg)
    model = create_segmenter(cfg, len(data.classes))
    freeze_encoder(model, cfg)
    return model


def check_weight(cfg: dict) -> float:
    w = cfg["loss/cls_weight"]
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"loss/cls_weight={w} is outside the accepted range [0, 1].")
    return w


def joint_loss(cfg: dict, mask_logits, masks, class_logits, labels) -> torch.Tensor:
    w = cfg["loss/cls_weight"]
    seg = segmentation_loss(cfg["loss/seg"])(mask_logits, masks)
    return (1 - w) * seg + w * nn.functional.cross_entropy(class_logits, labels)


def loss(model: nn.Module, batch: tuple, cfg: dict) -> torch.Tensor:
    images, masks, labels = batch
    mask_logits, class_logits = model(images)
    return joint_loss(cfg, mask_logits, masks, class_logits, labels)


def predict_gated(model: nn.Module, loader, cfg: dict, data: Data, device, pair_loss, distances: bool = False) -> Outputs:
    """Outputs of a model returning (mask logits, class logits), its masks gated by gate/class; the loss is
    pair_loss(cfg, mask_logits, masks, class_logits, labels) of the same forward pass."""
    gate = data.class_index(cfg["gate/class"], "gate/class") if cfg["gate/class"] else None
    stats, y_true, probs, loss_sum, n = MaskStats(distances), [], [], 0.0, 0
    for images, masks, labels in loader:
        images, masks, labels = images.to(device), masks.to(device), labels.to(device)
        mask_logits, class_logits = model(images)
        loss_sum += pair_loss(cfg, mask_logits, masks, class_logits, labels).item() * len(images)
        n += len(images)
        stats.update(mask_logits, masks, None if gate is None else class_logits.argmax(1) == gate)
        y_true.append(labels.cpu().numpy())
        probs.append(probabilities(class_logits, multilabel=False))
    return Outputs(loss=loss_sum / n, y_true=np.concatenate(y_true), probs=np.concatenate(probs), **stats.outputs())


def predict(model: nn.Module, loader, cfg: dict, data: Data, device, distances: bool = False) -> Outputs:
    return predict_gated(model, loader, cfg, data, device, joint_loss, distances)


def score(out: Outputs, data: Data, prefix: str, extended: bool = False) -> dict:
    return {**classification_metrics(out.y_true, out.probs, data.classes, prefix, extended, data.positive),
            **mask_metrics(out, prefix, extended), f"{prefix}/loss": out.loss}


TASK = Task(build=build, loss=loss, evaluate=Evaluation(predict, score), masks=True)


def train(config: dict) -> None:
    fit(config, TASK)
