"""Segmentation + classification in one smp model (its aux_params head on the deepest features).

loss = (1 - loss/cls_weight) * segmentation loss + loss/cls_weight * cross-entropy

With gate/class set (study C.3), the predicted mask of an image the head assigns to that
class is blanked; the mask metrics are reported with and without this gating.
"""
from __future__ import annotations

import torch
from torch import nn

from trainables.losses import check_segmentation_loss, segmentation_loss
from trainables.loop import Task, fit
from trainables.trial_data import Data
from trainables.metrics import Evaluation, Outputs, classification_metrics, mask_metrics, predict_gated
from trainables.models import create_segmenter, freeze_encoder


def build(cfg: dict, data: Data) -> nn.Module:
    model = create_segmenter(cfg, len(data.classes))
    freeze_encoder(model, cfg)
    return model


def joint_loss(cfg: dict, mask_logits, masks, class_logits, labels) -> torch.Tensor:
    w = cfg["loss/cls_weight"]
    seg = segmentation_loss(cfg["loss/seg"])(mask_logits, masks)
    return (1 - w) * seg + w * nn.functional.cross_entropy(class_logits, labels)


def loss(model: nn.Module, batch: tuple, cfg: dict) -> torch.Tensor:
    images, masks, labels = batch
    mask_logits, class_logits = model(images)
    return joint_loss(cfg, mask_logits, masks, class_logits, labels)


def predict(model: nn.Module, loader, cfg: dict, data: Data, device, distances: bool = False) -> Outputs:
    return predict_gated(model, loader, cfg, data, device, joint_loss, distances)


def score(out: Outputs, data: Data, prefix: str, extended: bool = False) -> dict:
    return {**classification_metrics(out.y_true, out.probs, data.classes, prefix, extended, data.positive),
            **mask_metrics(out, prefix, extended), f"{prefix}/loss": out.loss}


TASK = Task(build=build, loss=loss, evaluate=Evaluation(predict, score), masks=True, check=check_segmentation_loss)


def train(cfg: dict) -> None:
    fit(cfg, TASK)
