"""Metric conventions and test-split metrics on hand-made inputs with known answers."""
import dataclasses

import numpy as np
import pytest
import scipy.stats
import torch
from sklearn.metrics import accuracy_score, f1_score

from trainables.evaluation import check_classes, evaluate_test, intervals
from trainables.metrics import (MaskStats, Outputs, class_scores, classification_metrics, expected_calibration_error,
                                hd95, mask_metrics, sensitivity_at_specificity)

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]


def probs_of(pred: np.ndarray, num_classes: int = 4) -> np.ndarray:
    return np.eye(num_classes)[pred] * 0.7 + 0.3 / num_classes


def test_an_absent_class_never_predicted_does_not_drag_macro_f1_down():
    y_true = np.array([0, 0, 1, 1, 2, 2])  # class 3 is absent from the split
    y_pred = np.array([0, 0, 1, 2, 2, 2])  # and never predicted
    metrics = classification_metrics(y_true, probs_of(y_pred), CLASSES)
    # per-class F1: 1, 2/3, 4/5 -> macro over the 3 present classes 37/45; over all 4 classes it was 37/60
    assert metrics["val/f1_macro"] == pytest.approx(37 / 45)
    assert metrics["val/f1_macro"] == pytest.approx(f1_score(y_true, y_pred, labels=[0, 1, 2], average="macro"))
    assert f1_score(y_true, y_pred, labels=[0, 1, 2, 3], average="macro", zero_division=0) == pytest.approx(37 / 60)
    assert metrics["val/recall_macro"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert metrics["val/classes_absent"] == 1


def test_multilabel_macro_averages_over_labels_present():
    y_true = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0]])  # label 2 has no positive
    probs = np.array([[0.9, 0.1, 0.1], [0.8, 0.2, 0.1], [0.1, 0.7, 0.1]])
    scores = class_scores(y_true, probs)
    assert scores["f1_macro"] == pytest.approx((1 + 2 / 3) / 2) and scores["classes_absent"] == 1


def test_confusion_matrix_carries_its_class_names():
    metrics = classification_metrics(np.array([0, 1, 1]), probs_of(np.array([0, 0, 1]), 2), ["no", "yes"])
    assert metrics["val/confusion_matrix"] == {"classes": ["no", "yes"], "matrix": [[1, 0], [1, 1]],
                                               "rows": "true", "columns": "predicted"}


def square(size=16, rows=(0, 0), cols=(0, 0)) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size)
    mask[..., rows[0]:rows[1], cols[0]:cols[1]] = 1
    return mask


def mask_outputs(pairs, blank=None) -> Outputs:
    """Outputs of (predicted, true) mask pairs; blank: images whose prediction the gate empties."""
    stats = MaskStats()
    for i, (pred, true) in enumerate(pairs):
        stats.update((pred * 2 - 1) * 10, true, None if blank is None else torch.tensor([i in blank]))
    return Outputs(loss=0.0, **stats.outputs())


def test_all_empty_masks_score_one_and_have_no_lesion_dice():
    empty = square()
    metrics = mask_metrics(mask_outputs([(empty, empty)] * 3))
    assert metrics["val/dice"] == metrics["val/iou"] == metrics["val/miou"] == 1.0  # empty vs empty: 1
    assert np.isnan(metrics["val/dice_lesion"]) and np.isnan(metrics["val/dice_pooled"])  # no lesion: undefined
    spurious = square(rows=(0, 2), cols=(0, 2))
    metrics = mask_metrics(mask_outputs([(spurious, empty), (empty, empty)]))
    assert metrics["val/dice"] == 0.5 and metrics["val/dice_pooled"] == 0.0 and np.isnan(metrics["val/dice_lesion"])


def test_per_image_lesion_and_pooled_dice_on_a_hand_made_case():
    lesion4, half, lesion2 = square(rows=(0, 2), cols=(0, 2)), square(rows=(0, 1), cols=(0, 2)), square(rows=(5, 6), cols=(5, 7))
    # image 1: 2 of 4 lesion pixels found (Dice 4/6); image 2: empty vs empty (1); image 3: exact (1)
    metrics = mask_metrics(mask_outputs([(half, lesion4), (square(), square()), (lesion2, lesion2)]))
    assert metrics["val/dice"] == pytest.approx((4 / 6 + 1 + 1) / 3)
    assert metrics["val/dice_lesion"] == pytest.approx((4 / 6 + 1) / 2)
    assert metrics["val/dice_pooled"] == pytest.approx(2 * 4 / (2 * 4 + 0 + 2))  # tp 4, fp 0, fn 2 over the split
    assert metrics["val/iou"] == pytest.approx((2 / 4 + 1 + 1) / 3)


def test_blanking_normals_raises_per_image_dice_but_not_lesion_dice():
    lesion, found = square(rows=(0, 4), cols=(0, 4)), square(rows=(0, 4), cols=(0, 2))
    spurious = square(rows=(8, 10), cols=(8, 10))  # predicted on a normal image (empty true mask)
    pairs = [(found, lesion), (found, lesion), (spurious, square()), (spurious, square())]
    metrics = mask_metrics(mask_outputs(pairs, blank={2, 3}))
    assert metrics["val/dice"] == pytest.approx((2 / 3 + 2 / 3 + 0 + 0) / 4)
    assert metrics["val/dice_gated"] == pytest.approx((2 / 3 + 2 / 3 + 1 + 1) / 4)
    assert metrics["val/dice_lesion"] == metrics["val/dice_lesion_gated"] == pytest.approx(2 / 3)
    assert metrics["val/dice_pooled"] < metrics["val/dice_pooled_gated"] == pytest.approx(2 / 3)


def test_hd95_of_two_squares_a_known_distance_apart():
    true, shifted = square(32, (10, 20), (10, 20)), square(32, (10, 20), (13, 23))
    assert hd95(shifted.long(), true.long()) == pytest.approx([3.0])
    distances = hd95(torch.cat([shifted, square(32)]).long(), torch.cat([true, true]).long())
    assert distances[0] == pytest.approx(3.0) and np.isnan(distances[1])  # an empty mask has no distance
    stats = MaskStats(distances=True)
    stats.update(torch.cat([shifted, square(32)]) * 20 - 10, torch.cat([true, square(32)]))
    out = Outputs(loss=0.0, **stats.outputs())
    assert mask_metrics(out, "test", extended=True)["test/hd95"] == pytest.approx(3.0)


def test_sensitivity_at_specificity_on_a_hand_made_roc():
    negatives = np.arange(20) / 20  # 0, 0.05, ..., 0.95
    positives = np.array([0.97, 0.93, 0.88, 0.5, 0.2])
    y = np.r_[np.zeros(20, int), np.ones(5, int)]
    p1 = np.r_[negatives, positives]
    probs = np.c_[1 - p1, p1]
    # at most 1 of 20 negatives above the threshold: 0.97 and 0.93 found; at most 2: also 0.88
    assert sensitivity_at_specificity(y, probs, 0.95) == pytest.approx(2 / 5)
    assert sensitivity_at_specificity(y, probs, 0.90) == pytest.approx(3 / 5)
    # eval/positive_class names class 0: the sensitivity of class 0, as if its labels and columns were swapped
    assert sensitivity_at_specificity(y, probs, 0.90, positive=0) == sensitivity_at_specificity(
        1 - y, probs[:, ::-1], 0.90) != 3 / 5
    three = np.c_[probs * 0.5, np.full(25, 0.5)]  # a third class, never true: left out of the macro mean
    assert sensitivity_at_specificity(y, three, 0.90) == pytest.approx(
        np.mean([sensitivity_at_specificity(1 - y, np.c_[p1, 1 - p1], 0.9), 3 / 5]))


def test_expected_calibration_error_on_hand_made_probabilities():
    y = np.array([0, 1, 0, 0])
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    # confidence 0.9: half right (gap 0.4, 2 of 4 images); 0.6: all right (gap 0.4, 2 of 4)
    assert expected_calibration_error(y, probs) == pytest.approx(0.4)
    calibrated = np.array([[0.5, 0.5]] * 4)
    assert expected_calibration_error(np.array([0, 0, 1, 1]), calibrated) == pytest.approx(0.0)


def accuracy_outputs(n: int, seed: int = 1) -> Outputs:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    pred = np.where(rng.random(n) < 0.8, y, 1 - y)
    return Outputs(loss=0.0, y_true=y, probs=probs_of(pred, 2))


def accuracy(o: Outputs) -> dict:
    return {"test/accuracy": accuracy_score(o.y_true, o.probs.argmax(1))}


def test_bootstrap_interval_matches_scipy_run_independently_and_narrows_with_n():
    out = accuracy_outputs(60)
    ci = intervals(accuracy, out, ["test/accuracy"], 1000, seed=3)
    correct = (out.probs.argmax(1) == out.y_true).astype(float)
    ref = scipy.stats.bootstrap((correct,), np.mean, n_resamples=1000, method="percentile", rng=3).confidence_interval
    assert (ci["test/accuracy_ci_low"], ci["test/accuracy_ci_high"]) == pytest.approx((ref.low, ref.high))
    assert ci["test/accuracy_ci_low"] < correct.mean() < ci["test/accuracy_ci_high"]
    wide = intervals(accuracy, accuracy_outputs(40), ["test/accuracy"], 1000, seed=3)
    narrow = intervals(accuracy, accuracy_outputs(640), ["test/accuracy"], 1000, seed=3)
    width = {k: v["test/accuracy_ci_high"] - v["test/accuracy_ci_low"] for k, v in (("wide", wide), ("narrow", narrow))}
    assert width["narrow"] < width["wide"] / 2  # ~1/sqrt(n): 4x narrower for 16x the images


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    """A multitask model (untrained, tiny) and its trial data on the generated set."""
    import os

    from trainables import multitask
    from trainables.trial_data import prepare_data
    from trainables.registry import TRAINABLES

    os.environ.setdefault("MEDTUNE_CACHE", str(tmp_path_factory.mktemp("cache")))
    cfg = {**TRAINABLES["multitask"].defaults, "data/image_size": 32, "model/encoder": "tu-test_resnet",
           "gate/class": "Normal", "eval/bootstrap": 200, "train/batch_size": 16}
    data = prepare_data(cfg, masks=True)
    torch.manual_seed(0)
    model = multitask.TASK.build(cfg, data)
    return multitask.TASK, model, cfg, data


def test_test_metrics_share_validation_code_and_lie_in_their_intervals(trial):
    from trainables.trial_data import trial_loader

    task, model, cfg, data = trial
    # Stand-in for the held-out split (trainables.trial_data.open_data(cfg, masks, part="test")): the val images.
    ds = data.ds
    idx = data.val_idx
    test = dataclasses.replace(ds, images=ds.images[idx], masks=ds.masks[idx], labels=ds.labels[idx],
                               files=[ds.files[i] for i in idx], split=None)
    metrics = evaluate_test(task, model, cfg, data, test, torch.device("cpu"))
    model.eval()
    with torch.no_grad():
        val = task.evaluate(model, trial_loader(data, cfg, torch.device("cpu")), cfg, data, "cpu")
    for key, value in val.items():  # the same images through the same code: the same numbers
        if key != "val/confusion_matrix":
            assert metrics["test/" + key[4:]] == pytest.approx(value, nan_ok=True), key
    assert metrics["test/confusion_matrix"] == val["val/confusion_matrix"]
    assert metrics["test/images"] == len(idx)
    for key in ("accuracy", "f1_macro", "auroc", "dice", "dice_lesion", "dice_pooled", "iou", "hd95", "ece",
                "sensitivity_at_spec90", "sensitivity_at_spec95", "dice_gated"):
        low, high = metrics[f"test/{key}_ci_low"], metrics[f"test/{key}_ci_high"]
        assert low <= metrics[f"test/{key}"] <= high, (key, low, metrics[f"test/{key}"], high)
    with pytest.raises(ValueError, match="classes"):
        check_classes(dataclasses.replace(test, classes=test.classes[::-1]), data)
