"""Validation metrics from well-tested code: scikit-learn for classes, smp.metrics for masks."""
from __future__ import annotations

import numpy as np
import segmentation_models_pytorch as smp
import torch
from sklearn.metrics import (accuracy_score, average_precision_score, confusion_matrix,
                             precision_recall_fscore_support, roc_auc_score)


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, multilabel: bool = False) -> dict:
    """Accuracy, macro F1/precision/recall, macro AUROC and mAP from true labels and probabilities.

    Single-label: y_true (N,) class indices, probs (N, C) softmax; the prediction is the argmax and
    the confusion matrix is included. Multi-label: y_true (N, C) multi-hot, probs (N, C) sigmoid; a
    label is predicted at p >= 0.5 and accuracy is the exact-match ratio. AUROC and average
    precision are one-vs-rest per class, averaged over the classes with both positives and
    negatives in y_true (the others have none defined).
    """
    num_classes = probs.shape[1]
    onehot = y_true.astype(int) if multilabel else np.eye(num_classes, dtype=int)[y_true]
    y_pred = (probs >= 0.5).astype(int) if multilabel else probs.argmax(1)
    labels = None if multilabel else list(range(num_classes))
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    scored = [c for c in range(num_classes) if 0 < onehot[:, c].sum() < len(onehot)]
    metrics = {
        "val/accuracy": float(accuracy_score(y_true, y_pred)),
        "val/f1_macro": float(f1),
        "val/precision_macro": float(precision),
        "val/recall_macro": float(recall),
        "val/auroc": float(roc_auc_score(onehot[:, scored], probs[:, scored], average="macro")) if scored else float("nan"),
        "val/map": float(average_precision_score(onehot[:, scored], probs[:, scored], average="macro")) if scored else float("nan"),
    }
    if not multilabel:
        metrics["val/confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return metrics


class MaskStats:
    """Per-image confusion counts of binary masks over a validation pass, with and without gating.

    Gating (study C.3): the predicted mask of an image the classifier assigns to the no-lesion
    class is replaced by an empty mask. Images with an empty true mask and an empty prediction
    score 1 (smp's zero_division).
    """

    def __init__(self) -> None:
        self.plain: list[torch.Tensor] = []
        self.gated: list[torch.Tensor] = []

    def update(self, logits: torch.Tensor, target: torch.Tensor, blank: torch.Tensor | None = None) -> None:
        """blank: bool (B,), the images whose mask the classifier blanks; None blanks none."""
        pred = (logits.sigmoid() >= 0.5).long()
        self.plain.append(self._stats(pred, target))
        if blank is not None:
            pred = pred * (~blank).long().view(-1, *([1] * (pred.dim() - 1)))
        self.gated.append(self._stats(pred, target))

    @staticmethod
    def _stats(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.stack(smp.metrics.get_stats(pred, target.long(), mode="binary"))

    @staticmethod
    def _scores(stats: list[torch.Tensor], suffix: str) -> dict:
        tp, fp, fn, tn = torch.cat(stats, dim=1)
        iou = float(smp.metrics.iou_score(tp, fp, fn, tn, reduction="micro-imagewise"))
        background = float(smp.metrics.iou_score(tn, fn, fp, tp, reduction="micro-imagewise"))
        return {
            f"val/dice{suffix}": float(smp.metrics.f1_score(tp, fp, fn, tn, reduction="micro-imagewise")),
            f"val/iou{suffix}": iou,
            f"val/miou{suffix}": (iou + background) / 2,  # mean over the lesion and background classes
        }

    def compute(self) -> dict:
        return {**self._scores(self.plain, ""), **self._scores(self.gated, "_gated")}
