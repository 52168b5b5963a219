"""Validation metrics from well-tested code: scikit-learn for classes, smp.metrics for masks."""
from __future__ import annotations

import numpy as np
import segmentation_models_pytorch as smp
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict:
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(num_classes)), average="macro", zero_division=0
    )
    return {
        "val/accuracy": float(accuracy_score(y_true, y_pred)),
        "val/f1_macro": float(f1),
        "val/precision_macro": float(precision),
        "val/recall_macro": float(recall),
        "val/confusion_matrix": confusion_matrix(y_true, y_pred, labels=list(range(num_classes))).tolist(),
    }


class MaskStats:
    """Accumulates per-image true/false positive counts of binary masks over a validation pass."""

    def __init__(self) -> None:
        self.stats: list[torch.Tensor] = []

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        tp, fp, fn, tn = smp.metrics.get_stats(logits.sigmoid(), target.long(), mode="binary", threshold=0.5)
        self.stats.append(torch.stack([tp, fp, fn, tn]))

    def compute(self) -> dict:
        tp, fp, fn, tn = torch.cat(self.stats, dim=1)
        return {
            "val/dice": float(smp.metrics.f1_score(tp, fp, fn, tn, reduction="micro-imagewise")),
            "val/iou": float(smp.metrics.iou_score(tp, fp, fn, tn, reduction="micro-imagewise")),
        }
