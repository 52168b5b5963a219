"""A trial's pictures of its final model on the validation split, as PNG files (matplotlib, small, dpi 100).

Rendered once, at the trial's last epoch, into `artifacts/figures/` of the checkpoint it reports
(trainables.loop.fit); the tracker uploads them to the trial's MLflow run when the trial completes
(mlflow_server.tracker). What a trial gets:

- outputs with class probabilities (classification, triplet, zero-shot, multitask; a gated segmentation's
  gate classifier): `confusion_matrix.png` (counts and row-normalised, single-label data) and
  `roc_pr_curves.png` (scikit-learn's roc_curve / precision_recall_curve; binary data: the positive class,
  else one-vs-rest per class with both positives and negatives, AUC / AP in the legend);
- outputs with masks (segmentation, multitask): `masks_best_worst.png`, validation images with the true and
  predicted mask outlined, the best and the worst by Dice per image;
- with figures/gradcam (classification; tune-train turns it on): `gradcam.png`, Grad-CAM (pytorch_grad_cam)
  of the true class on a few validation images per class, at the backbone's last feature stage.

Each file carries its title as PNG text metadata ("Title") and as the figure's title.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import segmentation_models_pytorch as smp
import torch
import matplotlib
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.metrics import (ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay, auc,
                             average_precision_score, precision_recall_curve, roc_curve)

from trainables.metrics import Outputs, onehot_labels, scored_classes
from trainables.registry import GRADCAM_KEY

FIGURES = "figures"  # the folder under the checkpoint's artifacts/
DPI = 100
MASK_CASES = 4  # images in each of the best and worst rows
GRADCAM_IMAGES = 3  # validation images per class
CAM_ALPHA = 0.45  # the heat map's share of a Grad-CAM tile's colour

log = logging.getLogger(__name__)


def write_figures(task, model: torch.nn.Module, loader, cfg: dict, data, device: torch.device, folder: str) -> list[str]:
    """Render the trial's pictures (module doc) of `model` on the validation split into `folder`; their paths."""
    model.eval()
    with torch.no_grad():
        out = task.evaluate.predict(model, loader.ordered("val"), cfg, data, device)
    os.makedirs(folder, exist_ok=True)
    paths = []
    if out.probs is not None:
        if out.y_true.ndim == 1:
            paths.append(save(confusion_figure(out, data.classes), folder, "confusion_matrix.png"))
        paths.append(save(curves_figure(out, data.classes, data.positive), folder, "roc_pr_curves.png"))
    if out.masks is not None:
        paths.append(save(masks_figure(model, out, data, device), folder, "masks_best_worst.png"))
    if cfg.get(GRADCAM_KEY):
        if (figure := gradcam_figure(model, data, device)) is not None:
            paths.append(save(figure, folder, "gradcam.png"))
    return paths


def save(figure: Figure, folder: str, name: str) -> str:
    """Write figure as folder/name, its title in the PNG's text metadata too."""
    path = os.path.join(folder, name)
    figure.savefig(path, dpi=DPI, metadata={"Title": figure.get_suptitle()})
    return path


def confusion_figure(out: Outputs, classes: list[str]) -> Figure:
    """Counts and row-normalised shares of the validation confusion matrix (rows: true class)."""
    figure = Figure(figsize=(5 + 1.1 * len(classes), 2.6 + 0.45 * len(classes)), layout="constrained")
    labels, predicted = list(range(len(classes))), out.probs.argmax(1)
    rotation = 30 if sum(map(len, classes)) > 24 else "horizontal"
    for ax, normalize, fmt, what in zip(figure.subplots(1, 2), (None, "true"), ("d", ".2f"), ("Counts", "Row-normalised")):
        display = ConfusionMatrixDisplay.from_predictions(out.y_true, predicted, labels=labels, display_labels=classes,
                                                          normalize=normalize, values_format=fmt, ax=ax,
                                                          xticks_rotation=rotation, cmap="Blues", colorbar=False)
        figure.colorbar(display.im_, ax=ax, shrink=0.8,
                        label="Images" if normalize is None else "Share of the true class's images (0-1)")
        ax.set(title=what, xlabel="Predicted class", ylabel="True class")
    figure.suptitle(f"Validation confusion matrix ({len(out)} images)")
    return figure


def curve_classes(out: Outputs, positive: int) -> list[int]:
    """The classes drawn: the positive class of binary single-label data, else every class with both
    positives and negatives (one-vs-rest), as the AUROC metric scores them."""
    onehot = onehot_labels(out.y_true, out.probs.shape[1])
    if out.y_true.ndim == 1 and out.probs.shape[1] == 2:
        return [positive] if positive in scored_classes(onehot) else []
    return scored_classes(onehot)


def curves_figure(out: Outputs, classes: list[str], positive: int) -> Figure:
    """ROC and precision-recall curves of the validation split, per class (see curve_classes)."""
    onehot = onehot_labels(out.y_true, out.probs.shape[1])
    drawn = curve_classes(out, positive)
    figure = Figure(figsize=(10, 4.4), layout="constrained")
    roc_ax, pr_ax = figure.subplots(1, 2)
    for c in drawn:
        fpr, tpr, _ = roc_curve(onehot[:, c], out.probs[:, c])
        RocCurveDisplay(fpr=fpr, tpr=tpr, roc_auc=auc(fpr, tpr), name=classes[c]).plot(ax=roc_ax)
        precision, recall, _ = precision_recall_curve(onehot[:, c], out.probs[:, c])
        ap = average_precision_score(onehot[:, c], out.probs[:, c])
        PrecisionRecallDisplay(precision, recall, average_precision=ap, name=classes[c]).plot(ax=pr_ax)
    roc_ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="Chance (AUC = 0.50)")
    roc_ax.set(title="ROC", xlabel="False positive rate (1 - specificity)", ylabel="True positive rate (sensitivity)")
    pr_ax.set(title="Precision-recall", xlabel="Recall (sensitivity)", ylabel="Precision (positive predictive value)")
    for ax in (roc_ax, pr_ax):
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
        ax.legend(fontsize="small", loc="lower right" if ax is roc_ax else "lower left")
    how = "one-vs-rest per class" if len(drawn) > 1 or out.probs.shape[1] > 2 else f"positive class {classes[positive]}"
    figure.suptitle(f"Validation ROC and precision-recall curves ({how}, {len(out)} images)")
    return figure


def image_dice(out: Outputs) -> np.ndarray:
    """Each validation image's Dice (an empty true mask with an empty prediction: 1), as val/dice averages."""
    tp, fp, fn, tn = (torch.as_tensor(out.masks[:, i, None]) for i in range(4))
    return smp.metrics.f1_score(tp, fp, fn, tn, reduction="none", zero_division=1)[:, 0].numpy()


def predicted_masks(model: torch.nn.Module, data, positions: np.ndarray, device: torch.device) -> np.ndarray:
    """Binary masks (N, S, S) the model predicts for the validation images at `positions`."""
    images = torch.stack([data.val_set[int(i)][0] for i in positions]).to(device)
    with torch.no_grad():
        logits = model(images)
    logits = logits[0] if isinstance(logits, tuple) else logits  # (masks, classes) of multitask / gated models
    return (logits.sigmoid() >= 0.5)[:, 0].cpu().numpy()


def rgb(image: np.ndarray) -> np.ndarray:
    """A uint8 (S, S, C) image as float RGB in [0, 1] (grey repeated for one channel)."""
    image = np.asarray(image, dtype=np.float32) / 255
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]


def montage(tiles: list[np.ndarray], columns: int, gap: float) -> np.ndarray:
    """Tiles (S, S, ...) laid out row by row, `columns` to a row, S // 16 + 1 pixels of `gap` between them
    and around; one image for one axes (far cheaper to draw than an axes per tile)."""
    side, space = tiles[0].shape[0], tiles[0].shape[0] // 16 + 1
    rows = -(-len(tiles) // columns)
    step = side + space
    canvas = np.full((space + rows * step, space + columns * step, *tiles[0].shape[2:]), gap, dtype=np.float32)
    for n, tile in enumerate(tiles):
        y, x = space + (n // columns) * step, space + (n % columns) * step
        canvas[y:y + side, x:x + side] = tile
    return canvas


def label_tiles(ax, labels: list[str], columns: int, side: int, rows: list[str]) -> None:
    """Each tile's label in its top-left corner, the rows' names as y ticks; no x ticks."""
    space = side // 16 + 1
    step = side + space
    for n, text in enumerate(labels):
        ax.text(space + (n % columns) * step + 0.5, space + (n // columns) * step + 0.5, text, fontsize="x-small",
                color="white", va="top", bbox={"facecolor": "black", "alpha": 0.55, "pad": 1.5, "linewidth": 0})
    ax.set(xticks=[], yticks=[space + i * step + side / 2 for i in range(len(rows))])
    ax.set_yticklabels(rows)


def masks_figure(model: torch.nn.Module, out: Outputs, data, device: torch.device) -> Figure:
    """Validation images with the true (green) and predicted (red) mask outlines: a row of the MASK_CASES best
    and one of the worst by Dice per image."""
    dice = image_dice(out)
    order = np.argsort(-dice, kind="stable")
    k = max(1, min(MASK_CASES, len(order) // 2))
    positions = np.concatenate([order[:k], order[::-1][:k]])
    images = [data.val_idx[i] for i in positions]
    predicted = predicted_masks(model, data, positions, device)
    side = data.ds.images.shape[1]
    figure = Figure(figsize=(2.2 * k + 1.2, 4.9), layout="constrained")
    ax = figure.subplots()
    ax.imshow(montage([rgb(data.ds.images[j]) for j in images], k, 1.0), interpolation="nearest")
    for masks, color in ((data.ds.masks[images], "lime"), (predicted, "red")):
        ax.contour(montage(list(masks.astype(np.float32)), k, 0.0), levels=[0.5], colors=color, linewidths=1.2)
    names = ["" if data.multilabel else f", {data.classes[int(data.ds.labels[j])]}" for j in images]
    label_tiles(ax, [f"Dice {dice[i]:.2f}{name}" for i, name in zip(positions, names)], k, side,
                ["Best Dice", "Worst Dice"])
    handles = [Line2D([], [], color="lime", label="True mask"),
               Line2D([], [], color="red", label="Predicted mask (p >= 0.5)")]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncols=2, fontsize="small")
    figure.suptitle(f"Validation masks: the best and worst {k} of {len(dice)} images by Dice")
    return figure


def target_layer(model: torch.nn.Module, image_size: int) -> torch.nn.Module:
    """The module Grad-CAM looks at: the deepest feature stage timm names (feature_info) whose map is at least
    4 x 4 pixels at image_size (else the first stage), or the last convolution of a model without them."""
    info = getattr(model, "feature_info", None)
    if info:
        stages = [stage for stage in info if image_size / stage["reduction"] >= 4] or info[:1]
        return model.get_submodule(stages[-1]["module"])
    return [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]


def feature_map(model: torch.nn.Module):
    """pytorch_grad_cam's reshape_transform for the target layer's output: NCHW as it is; timm's NHWC (Swin)
    permuted; a ViT's tokens without its prefix tokens (class, registers) laid out on their square grid."""
    prefix = getattr(model, "num_prefix_tokens", 0)
    channels_last = getattr(model, "output_fmt", "NCHW") == "NHWC"

    def transform(x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            tokens = x[:, prefix:]
            side = int(round(tokens.shape[1] ** 0.5))
            return tokens.reshape(len(x), side, side, -1).permute(0, 3, 1, 2)
        return x.permute(0, 3, 1, 2) if channels_last else x

    return transform


def gradcam_figure(model: torch.nn.Module, data, device: torch.device) -> Figure | None:
    """Grad-CAM of the true class on the first GRADCAM_IMAGES validation images of each class (a row per
    class), with the model's prediction; None for a model that is not a timm model (hf: backbones)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if not hasattr(model, "pretrained_cfg"):  # timm models carry their pretrained config
        log.warning("Grad-CAM is drawn for timm backbones only; %s is not one.", type(model).__name__)
        return None
    onehot = onehot_labels(data.ds.labels[data.val_idx], len(data.classes))
    rows = [(c, np.flatnonzero(onehot[:, c])[:GRADCAM_IMAGES]) for c in range(len(data.classes)) if onehot[:, c].any()]
    positions = np.concatenate([p for _, p in rows])
    targets = [ClassifierOutputTarget(c) for c, p in rows for _ in p]
    # an input that requires gradients: frozen layers before the target layer still pass them
    images = torch.stack([data.val_set[int(i)][0] for i in positions]).to(device).requires_grad_()
    layer = target_layer(model, images.shape[-1])
    layer_name = next(name for name, m in model.named_modules() if m is layer)
    model.eval()
    with GradCAM(model=model, target_layers=[layer], reshape_transform=feature_map(model)) as cam:
        heat = cam(input_tensor=images, targets=targets)
        probs = (cam.outputs.sigmoid() if data.multilabel else cam.outputs.softmax(1)).detach().cpu().numpy()
    jet = matplotlib.colormaps["jet"]
    tiles, labels, n = [], [], 0
    for c, found in rows:
        for i in found:
            tiles.append((1 - CAM_ALPHA) * rgb(data.ds.images[int(data.val_idx[i])]) + CAM_ALPHA * jet(heat[n])[..., :3])
            guess = int(probs[n].argmax())
            labels.append(f"predicted {data.classes[guess]} ({probs[n][guess]:.2f})")
            n += 1
        tiles += [np.ones_like(tiles[-1])] * (GRADCAM_IMAGES - len(found))  # a short row: blank tiles
        labels += [""] * (GRADCAM_IMAGES - len(found))
    figure = Figure(figsize=(2.2 * GRADCAM_IMAGES + 2.4, 2.2 * len(rows) + 0.6), layout="constrained")
    ax = figure.subplots()
    ax.imshow(montage(tiles, GRADCAM_IMAGES, 1.0), interpolation="nearest")
    label_tiles(ax, labels, GRADCAM_IMAGES, images.shape[-1], [f"True {data.classes[c]}" for c, _ in rows])
    figure.colorbar(ScalarMappable(Normalize(0, 1), jet), ax=ax, shrink=0.8,
                    label="Grad-CAM relevance of the true class (0-1)")
    figure.suptitle(f"Grad-CAM of the true class at layer {layer_name}, validation images per class")
    return figure
