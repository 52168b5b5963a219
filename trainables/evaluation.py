"""Evaluation on the held-out test split, once, after the last epoch (eval/test; tune-train sets it).

Every `test/*` metric is computed by the task's own predict + score (the code validation uses),
with the trial's validation transforms and normalisation, plus the test-only metrics (see
trainables.metrics: sensitivity at 90%/95% specificity, calibration error, HD95).

95% confidence intervals (`test/<metric>_ci_low`, `_ci_high`) come from scipy.stats.bootstrap over
the test images (eval/bootstrap resamples, seeded by train/seed), by the percentile method: it needs
no jackknife (BCa's costs one re-scoring per test image) and stays defined when the resampled values
are degenerate (e.g. accuracy 1.0 in every resample), where BCa gives NaN. Images are resampled as
units (paired): a resample re-scores all of an image's outputs together.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.stats import bootstrap

from trainables.data import ImageSet
from trainables.data.arrays import ArrayDataset
from trainables.metrics import Outputs
from trainables.trial_data import open_data

# The metrics that get an interval, where the task reports them (and their _gated variants).
INTERVALS = ("accuracy", "f1_macro", "auroc", "map", "sensitivity_at_spec90", "sensitivity_at_spec95", "ece",
             "dice", "dice_lesion", "dice_pooled", "iou", "hd95")


def test_metrics(task, model: torch.nn.Module, cfg: dict, data, device: torch.device) -> dict:
    """`test/*` metrics of `model` on the held-out test split of the config's data set."""
    return evaluate_test(task, model, cfg, data, open_test(cfg, data, task.masks), device)


def open_test(cfg: dict, data, masks: bool) -> ImageSet:
    """The held-out test split of the config's data set, with the classes of the trial's data."""
    return check_classes(open_data(cfg, masks, part="test"), data)


def check_classes(test: ImageSet, data) -> ImageSet:
    """`test`, whose classes must be the trial's data's (the same data set)."""
    if list(test.classes) != list(data.classes):
        raise ValueError(f"The test split's classes {test.classes} differ from the training data's {data.classes}; "
                         f"both must come from the same data set.")
    return test


def evaluate_test(task, model: torch.nn.Module, cfg: dict, data, test: ImageSet, device: torch.device) -> dict:
    """`test/*` metrics, their 95% intervals and `test/images` of `model` on the images of `test`."""
    dataset = ArrayDataset(test.images, test.labels, np.arange(len(test.labels)), data.val_set.transform,
                           test.masks if task.masks else None)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg["train/batch_size"])
    model.eval()
    with torch.no_grad():
        out = task.evaluate.predict(model, loader, cfg, data, device, distances=True)
    return with_intervals(lambda o: task.evaluate.score(o, data, "test", extended=True), out, cfg)


def with_intervals(score, out: Outputs, cfg: dict) -> dict:
    """score(out) (`test/*` metrics) with the 95% intervals of INTERVALS and `test/images`."""
    metrics = score(out)
    keys = [key for name in INTERVALS for key in (f"test/{name}", f"test/{name}_gated") if key in metrics]
    metrics.update(intervals(score, out, keys, cfg["eval/bootstrap"], int(cfg["train/seed"])))
    return {**metrics, "test/images": len(out)}


def intervals(score, out: Outputs, keys: list[str], resamples: int, seed: int) -> dict:
    """95% percentile-bootstrap intervals of score(out)[key] for each key, resampling the images of out."""
    if len(out) < 2:  # one image: no spread to resample
        return {f"{k}_ci_{end}": float("nan") for k in keys for end in ("low", "high")}

    def statistic(idx: np.ndarray) -> np.ndarray:
        values = score(out.take(idx))
        return np.array([values[k] for k in keys], dtype=float)

    ci = bootstrap((np.arange(len(out)),), statistic, n_resamples=resamples, vectorized=False, paired=True,
                   method="percentile", confidence_level=0.95, rng=seed).confidence_interval
    return {**{f"{k}_ci_low": float(v) for k, v in zip(keys, ci.low)},
            **{f"{k}_ci_high": float(v) for k, v in zip(keys, ci.high)}}
