"""Metrics from well-tested code: scikit-learn for classes, smp.metrics for masks, MONAI for HD95.

An evaluation is two steps, shared by validation and test: a task's `predict` collects per-image
`Outputs` over a split, and `score` turns them into metrics (so the test split's bootstrap can
re-score resamples of the same outputs). The conventions:

- Macro F1 / precision / recall average over the classes present in the split's true labels
  (sklearn's labels=present), as AUROC and mAP do; `classes_absent` counts the classes left out.
  A prediction of an absent class still counts as a miss of the true class.
- dice / iou / miou: means over images of each image's score, an empty true mask with an empty
  prediction scoring 1 (smp's micro-imagewise reduction, zero_division=1).
- dice_lesion: the same mean over the images whose true mask is not empty (NaN without any).
- dice_pooled: one Dice over all pixels of the split (smp's micro reduction); NaN when the split
  has no lesion pixel and none is predicted. dice_lesion and dice_pooled leave the empty-vs-empty
  images out (dice_pooled: they add nothing), so a perfect score on normal images cannot inflate them.
- `_gated`: the same with the masks of images the classifier assigns to gate/class blanked.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import segmentation_models_pytorch as smp
import torch
from sklearn.metrics import (accuracy_score, average_precision_score, confusion_matrix,
                             precision_recall_fscore_support, roc_auc_score, roc_curve)

ECE_BINS = 15


@dataclass(frozen=True)
class Outputs:
    """Per-image results of one pass over a split; every metric is computed from these."""

    loss: float  # mean loss of the pass (not resampled)
    y_true: np.ndarray | None = None  # (N,) class indices, or (N, C) multi-hot
    probs: np.ndarray | None = None  # (N, C) softmax, or sigmoid for multi-hot labels
    masks: np.ndarray | None = None  # (N, 4) tp, fp, fn, tn pixel counts of each image's mask
    masks_gated: np.ndarray | None = None  # the same after gating
    hd95: np.ndarray | None = None  # (N,) each image's HD95 in pixels, NaN where undefined

    def __len__(self) -> int:
        return len(self.y_true if self.y_true is not None else self.masks)

    def take(self, idx: np.ndarray) -> "Outputs":
        """The outputs of the images idx (a bootstrap resample)."""
        fields = ("y_true", "probs", "masks", "masks_gated", "hd95")
        return replace(self, **{f: getattr(self, f)[idx] for f in fields if getattr(self, f) is not None})


@dataclass(frozen=True)
class Evaluation:
    """A task's evaluate hook: predict(model, batches, cfg, data, device, distances) -> Outputs, then
    score(outputs, data, prefix, extended) -> metrics; `extended` adds the test-only metrics. Called with
    the trial's loader (trainables.loading.TrialLoader), it scores the validation split; the test split
    (trainables.evaluation) uses predict and score. A task whose validation needs more (the training
    split too, or fitting a head first) subclasses it with its own __call__."""

    predict: Callable
    score: Callable

    def __call__(self, model, loader, cfg: dict, data, device) -> dict:
        return self.score(self.predict(model, loader.ordered("val"), cfg, data, device), data, "val")


def probabilities(logits: torch.Tensor, multilabel: bool) -> np.ndarray:
    """Class probabilities: sigmoid per class for multi-label data, else softmax."""
    return (logits.sigmoid() if multilabel else logits.softmax(1)).cpu().numpy()


def predict_gated(model, loader, cfg: dict, data, device, pair_loss, distances: bool = False) -> Outputs:
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


def onehot_labels(y_true: np.ndarray, num_classes: int) -> np.ndarray:
    return y_true.astype(int) if y_true.ndim == 2 else np.eye(num_classes, dtype=int)[y_true]


def scored_classes(onehot: np.ndarray) -> list[int]:
    """The classes with both positives and negatives (a ROC curve is defined for these only)."""
    return [c for c in range(onehot.shape[1]) if 0 < onehot[:, c].sum() < len(onehot)]


def class_scores(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """accuracy, f1/precision/recall_macro, auroc, map, classes_absent (see the module doc).

    Single-label: y_true (N,) indices, the prediction is the argmax. Multi-label: y_true (N, C)
    multi-hot, a label is predicted at p >= 0.5 and accuracy is the exact-match ratio. AUROC and
    average precision are one-vs-rest per class over the classes with both positives and negatives.
    """
    num_classes = probs.shape[1]
    onehot = onehot_labels(y_true, num_classes)
    y_pred = (probs >= 0.5).astype(int) if y_true.ndim == 2 else probs.argmax(1)
    present = [c for c in range(num_classes) if onehot[:, c].any()]
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=present, average="macro",
                                                               zero_division=0)
    scored = scored_classes(onehot)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "auroc": float(roc_auc_score(onehot[:, scored], probs[:, scored], average="macro")) if scored else float("nan"),
        "map": float(average_precision_score(onehot[:, scored], probs[:, scored], average="macro")) if scored else float("nan"),
        "classes_absent": num_classes - len(present),
    }


def confusion(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """The confusion matrix with its class names: rows are true classes, columns predicted ones."""
    matrix = confusion_matrix(y_true, probs.argmax(1), labels=list(range(len(classes))))
    return {"classes": list(classes), "matrix": matrix.tolist(), "rows": "true", "columns": "predicted"}


def sensitivity_at_specificity(y_true: np.ndarray, probs: np.ndarray, specificity: float, positive: int = 1) -> float:
    """The highest sensitivity on the ROC curve whose specificity is at least `specificity`.

    Binary single-label data: of the class labelled `positive` (eval/positive_class; default the
    second class). Otherwise the macro mean of the one-vs-rest values over the classes with both
    positives and negatives.
    """
    onehot = onehot_labels(y_true, probs.shape[1])
    classes = [positive] if y_true.ndim == 1 and probs.shape[1] == 2 else scored_classes(onehot)
    values = []
    for c in classes:
        fpr, tpr, _ = roc_curve(onehot[:, c], probs[:, c])
        values.append(tpr[1 - fpr >= specificity - 1e-9].max())
    return float(np.mean(values)) if values else float("nan")


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the mean |accuracy - confidence| over equal-width confidence bins, weighted by their images.

    Single-label: top-label (the confidence is the highest probability, correct when it is the true
    class). Multi-label: every (image, label) probability is a binary prediction of that label.
    """
    if y_true.ndim == 2:
        p, y = probs.ravel(), y_true.ravel().astype(bool)
        confidence, correct = np.maximum(p, 1 - p), (p >= 0.5) == y
    else:
        confidence, correct = probs.max(1), probs.argmax(1) == y_true
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)  # bins (k/B, (k+1)/B]
    gap = np.bincount(which, weights=correct - confidence, minlength=bins)
    return float(np.abs(gap).sum() / len(confidence))


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str], prefix: str = "val",
                           extended: bool = False, positive: int = 1) -> dict:
    """`prefix/<name>` of class_scores, the confusion matrix (single-label) and, extended, the
    sensitivity at 90% and 95% specificity (binary: of class `positive`) and the calibration error."""
    metrics = class_scores(y_true, probs)
    if extended:
        metrics.update({"sensitivity_at_spec90": sensitivity_at_specificity(y_true, probs, 0.90, positive),
                        "sensitivity_at_spec95": sensitivity_at_specificity(y_true, probs, 0.95, positive),
                        "ece": expected_calibration_error(y_true, probs)})
    if y_true.ndim == 1:
        metrics["confusion_matrix"] = confusion(y_true, probs, classes)
    return {f"{prefix}/{k}": v for k, v in metrics.items()}


def classification_score(out: Outputs, data, prefix: str, extended: bool = False) -> dict:
    """classification_metrics of the outputs on `data`'s classes, and their mean loss as <prefix>/loss."""
    return {**classification_metrics(out.y_true, out.probs, data.classes, prefix, extended, data.positive),
            f"{prefix}/loss": out.loss}


def mask_scores(stats: np.ndarray) -> dict:
    """dice, iou, miou, dice_lesion, dice_pooled of per-image (tp, fp, fn, tn) counts (module doc)."""
    tp, fp, fn, tn = (torch.as_tensor(stats[:, i, None]) for i in range(4))
    iou = float(smp.metrics.iou_score(tp, fp, fn, tn, reduction="micro-imagewise"))
    background = float(smp.metrics.iou_score(tn, fn, fp, tp, reduction="micro-imagewise"))
    lesion = (tp + fn).squeeze(1) > 0
    return {
        "dice": float(smp.metrics.f1_score(tp, fp, fn, tn, reduction="micro-imagewise")),
        "iou": iou,
        "miou": (iou + background) / 2,  # mean over the lesion and background classes
        "dice_lesion": float(smp.metrics.f1_score(tp[lesion], fp[lesion], fn[lesion], tn[lesion],
                                                  reduction="micro-imagewise")) if lesion.any() else float("nan"),
        "dice_pooled": float(smp.metrics.f1_score(tp, fp, fn, tn, reduction="micro")),
    }


def mask_metrics(out: Outputs, prefix: str = "val", extended: bool = False) -> dict:
    """`prefix/<name>` and `prefix/<name>_gated` of mask_scores; extended adds `prefix/hd95`: the
    mean over the images where both the true and the predicted mask are non-empty."""
    metrics = {f"{prefix}/{k}": v for k, v in mask_scores(out.masks).items()}
    metrics.update({f"{prefix}/{k}_gated": v for k, v in mask_scores(out.masks_gated).items()})
    if extended:
        metrics[f"{prefix}/hd95"] = float(np.nanmean(out.hd95)) if np.isfinite(out.hd95).any() else float("nan")
    return metrics


def hd95(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Each image's 95th-percentile Hausdorff distance in pixels (MONAI) between binary masks (B, 1, H, W);
    NaN where either mask is empty (the distance is undefined there)."""
    from monai.metrics import compute_hausdorff_distance

    both = (pred.flatten(1).any(1) & target.flatten(1).any(1)).cpu()
    out = np.full(len(pred), np.nan)
    if both.any():
        with warnings.catch_warnings():  # MONAI's own use of an argument it deprecated
            warnings.simplefilter("ignore", FutureWarning)
            d = compute_hausdorff_distance(pred[both].cpu(), target[both].cpu(), include_background=True, percentile=95)
        out[both.numpy()] = d[:, 0].numpy()
    return out


class MaskStats:
    """Per-image confusion counts of binary masks over an evaluation pass, with and without gating.

    Gating (study C.3): the predicted mask of an image the classifier assigns to the no-lesion
    class is replaced by an empty mask. With `distances`, each image's HD95 is kept too.
    """

    def __init__(self, distances: bool = False) -> None:
        self.plain: list[torch.Tensor] = []
        self.gated: list[torch.Tensor] = []
        self.distances: list[np.ndarray] | None = [] if distances else None

    def update(self, logits: torch.Tensor, target: torch.Tensor, blank: torch.Tensor | None = None) -> None:
        """blank: bool (B,), the images whose mask the classifier blanks; None blanks none."""
        pred = (logits.sigmoid() >= 0.5).long()
        self.plain.append(self._stats(pred, target))
        if self.distances is not None:
            self.distances.append(hd95(pred, target))
        if blank is not None:
            pred = pred * (~blank).long().view(-1, *([1] * (pred.dim() - 1)))
        self.gated.append(self._stats(pred, target))

    @staticmethod
    def _stats(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B, 4) tp, fp, fn, tn of each image."""
        return torch.cat(smp.metrics.get_stats(pred, target.long(), mode="binary"), dim=1).cpu()

    def outputs(self) -> dict:
        """The Outputs fields: masks, masks_gated and hd95 (None without `distances`)."""
        return {"masks": torch.cat(self.plain).numpy(), "masks_gated": torch.cat(self.gated).numpy(),
                "hd95": None if self.distances is None else np.concatenate(self.distances)}
