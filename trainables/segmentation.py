"""Binary segmentation on smp architectures and encoders, with a loss from smp.losses.

With gate/class set (study C.3, two-stage), a separate timm classifier (gate/backbone) is
trained alongside the segmenter on the same batches; the masks of images it assigns to
gate/class are blanked, and the mask metrics are reported with and without this gating.
"""
from __future__ import annotations

import torch
from torch import nn

from trainables.losses import check_segmentation_loss, class_loss, segmentation_loss
from trainables.loop import Task, fit
from trainables.trial_data import Data
from trainables.metrics import Evaluation, MaskStats, Outputs, class_scores, mask_metrics, predict_gated
from trainables.models import create_classifier, create_segmenter, freeze_encoder


class GatedSegmenter(nn.Module):
    """A segmenter and a separate classifier: forward gives (mask logits, class logits)."""

    def __init__(self, segmenter: nn.Module, classifier: nn.Module):
        super().__init__()
        self.segmenter, self.classifier = segmenter, classifier

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.segmenter(images), self.classifier(images)


def build(cfg: dict, data: Data) -> nn.Module:
    model = create_segmenter(cfg)
    freeze_encoder(model, cfg)
    if not cfg["gate/class"]:
        return model
    data.class_index(cfg["gate/class"], "gate/class")
    classifier = create_classifier({**cfg, "model/backbone": cfg["gate/backbone"], "model/pretrained": "",
                                    "model/drop_rate": 0.0}, len(data.classes))
    return GatedSegmenter(model, classifier)


def gated_loss(cfg: dict, mask_logits, masks, class_logits, labels) -> torch.Tensor:
    """The segmenter's loss plus the gate classifier's cross-entropy."""
    return segmentation_loss(cfg["loss/seg"])(mask_logits, masks) + class_loss(class_logits, labels)


def loss(model: nn.Module, batch: tuple, cfg: dict) -> torch.Tensor:
    images, masks, labels = batch
    if isinstance(model, GatedSegmenter):
        mask_logits, class_logits = model(images)
        return gated_loss(cfg, mask_logits, masks, class_logits, labels)
    return segmentation_loss(cfg["loss/seg"])(model(images), masks)


def predict(model: nn.Module, loader, cfg: dict, data: Data, device, distances: bool = False) -> Outputs:
    """Per-image mask counts (and the gate classifier's probabilities with gate/class) and the mean loss."""
    if isinstance(model, GatedSegmenter):
        return predict_gated(model, loader, cfg, data, device, gated_loss, distances)
    criterion, stats, loss_sum, n = segmentation_loss(cfg["loss/seg"]), MaskStats(distances), 0.0, 0
    for images, masks, _ in loader:
        images, masks = images.to(device), masks.to(device)
        logits = model(images)
        loss_sum += criterion(logits, masks).item() * len(images)
        n += len(images)
        stats.update(logits, masks)
    return Outputs(loss=loss_sum / n, **stats.outputs())


def score(out: Outputs, data: Data, prefix: str, extended: bool = False) -> dict:
    """Mask metrics and the loss; with a gate classifier also its accuracy and macro F1 as gate_*."""
    metrics = {**mask_metrics(out, prefix, extended), f"{prefix}/loss": out.loss}
    if out.y_true is not None:
        gate = class_scores(out.y_true, out.probs)
        metrics.update({f"{prefix}/gate_accuracy": gate["accuracy"], f"{prefix}/gate_f1_macro": gate["f1_macro"]})
    return metrics


TASK = Task(build=build, loss=loss, evaluate=Evaluation(predict, score), masks=True, check=check_segmentation_loss)


def train(cfg: dict) -> None:
    fit(cfg, TASK)
