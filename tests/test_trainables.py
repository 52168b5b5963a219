"""The contract every registered trainable keeps, checked on a real local Ray cluster with tiny models: it
reports its declared metrics every epoch, respects train/epochs, leaves a checkpoint, is reproducible under
its seed, and a worker killed mid-trial (SIGKILL) resumes from its checkpoint to exactly the result of an
uninterrupted run (and, killed before its first checkpoint, re-trains from the start to that result). The runs of every trainable go through one Tuner, run once for the module, whose workers
are reused from trial to trial: a fresh worker spends most of a tiny trial's time importing torch.

Each trainable's tiny config is data here, in TINY, keyed by its registry name: it is what makes a trial
take seconds (test models, 32 px, an eighth of the generated training images, BatchNorm re-estimated on two
batches) and test code is its only user, so it stays out of the registry. A registered trainable without one
fails test_every_trainable_has_a_tiny_config.
"""
import functools
import os

import numpy as np
import pytest

from trainables.registry import TRAINABLES, nested_config
from trials import entries, one_tuner, recorded

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNSAVED = "classification"  # the trainable whose contract also covers a trial killed before any checkpoint
BASE = {"data/image_size": 32, "train/epochs": 2, "train/batch_size": 8, "optim/lr": 1e-3, "data/fraction": 0.125,
        "aug/hflip": 0.5, "aug/rotation": 10.0, "model/frozen_layers": 1, "optim/schedule": "cosine",
        "optim/warmup_epochs": 1, "train/bn_reestimate_images": 16}
TINY = {
    "classification": {"model/backbone": "test_resnet", "data/workers": 2},  # loader workers in a Ray worker
    "segmentation": {"model/arch": "fpn", "model/encoder": "tu-test_resnet", "loss/seg": "dice_bce",
                     "gate/class": "Normal", "gate/backbone": "test_resnet"},
    "multitask": {"model/encoder": "tu-test_resnet", "loss/cls_weight": 0.3, "gate/class": "Normal",
                  "aug/where": "device"},  # batches augmented on the device replay on resume too
    "zeroshot": {"clip/model": "medtune-tiny-clip", "clip/mode": "linear_probe",
                 "clip/model_config": os.path.join(ROOT, "spaces", "clip_configs", "medtune-tiny-clip.json")},
    # killed after epoch 2, mid-way through the embedding phase; the final classifier scored on the test lists
    "triplet": {"data/layout": "image_folder", "data/split_files": "../Data-split", "data/channels": 3,
                "train/epochs": 4, "model/backbone": "test_resnet", "optim/name": "sgd", "optim/lr": 0.01,
                "optim/schedule": "step", "optim/warmup_epochs": 0, "triplet/supervised_epochs": 1,
                "triplet/embedding_epochs": 2, "triplet/mining": "augmented", "triplet/embedding_dim": 16,
                "triplet/embedding_lr": 0.01, "triplet/classifier_lr": 0.01, "triplet/unfrozen_layers": 1,
                "triplet/knn_k": 3, "eval/test": True, "eval/bootstrap": 50},
}


def tiny_config(name: str) -> dict:
    return {**TRAINABLES[name].defaults, **BASE, **TINY[name]}


def straight_and_killed(configs: dict[str, dict], storage: str) -> dict:
    """Two trials of each trainable's config, all in one Tuner (trials.one_tuner): one uninterrupted, one whose
    worker is killed after half its train/epochs and restarted from its checkpoint (saved every epoch,
    train/checkpoint_s 0), appending the epochs it reports to `<storage>/<name>-epochs.log`. The killed one
    draws no pictures (the straight one does; the metrics compared come before them). UNSAVED's config has a
    third trial, killed once after epoch 1 under the default train/checkpoint_s, before any checkpoint.
    name -> (the straight result, the killed-and-resumed result, the log); UNSAVED + "-unsaved" -> (its
    result, its log)."""
    logs = {name: os.path.join(storage, f"{name}-epochs.log") for name in [*configs, f"{UNSAVED}-unsaved"]}
    trials = {}
    for name, config in configs.items():
        trainable = TRAINABLES[name].function()
        killed = recorded(trainable, logs[name], kill_after_epoch=config["train/epochs"] // 2)
        trials[f"{name}-straight"] = functools.partial(trainable, nested_config(config))
        trials[f"{name}-killed"] = functools.partial(
            killed, nested_config({**config, "figures/draw": False, "train/checkpoint_s": 0}))
    unsaved = recorded(TRAINABLES[UNSAVED].function(), logs[f"{UNSAVED}-unsaved"], kill_after_epoch=1,
                       kill_if=first_time(os.path.join(storage, "unsaved-killed")))
    trials[f"{UNSAVED}-unsaved"] = functools.partial(unsaved, nested_config({**configs[UNSAVED], "figures/draw": False}))
    results = one_tuner(trials, "contract", storage, max_failures=1)
    return {**{name: (results[f"{name}-straight"], results[f"{name}-killed"], logs[name]) for name in configs},
            f"{UNSAVED}-unsaved": (results[f"{UNSAVED}-unsaved"], logs[f"{UNSAVED}-unsaved"])}


def first_time(marker: str):
    """A kill_if for trials.recorded that passes on its first call only (it leaves the file `marker`)."""
    def first(config) -> bool:
        if os.path.exists(marker):
            return False
        open(marker, "w").close()
        return True
    return first


@pytest.fixture(scope="module")
def runs(ray_cluster):
    """name -> (its tiny config, the straight result, the killed-and-resumed result, the epochs it logged),
    every trainable's trials run once for the module, in one Tuner."""
    configs = {name: tiny_config(name) for name in sorted(TRAINABLES)}
    trials = straight_and_killed(configs, ray_cluster)

    def run(name: str):
        if name.endswith("-unsaved"):
            return trials[name]
        straight, resumed, log = trials[name]
        for result in (straight, resumed):
            assert result.error is None, result.error
        return configs[name], straight, resumed, [str(e["epoch"]) for e in entries(log) if e["event"] == "report"]

    return run


def test_every_trainable_has_a_tiny_config():
    assert sorted(TINY) == sorted(TRAINABLES)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TRAINABLES))
def test_trainable_contract(runs, name):
    spec = TRAINABLES[name]
    config, straight, resumed, logged = runs(name)
    epochs = list(range(1, config["train/epochs"] + 1))
    history = straight.metrics_dataframe
    assert list(history["epoch"]) == epochs  # respects train/epochs, one report per epoch
    for metric in spec.metrics:
        assert history[metric].notna().all(), metric
    assert straight.checkpoint is not None and resumed.checkpoint is not None
    assert history["perf/train_images_per_s"].gt(0).all()

    # killed after the middle epoch; the restarted worker continued at the next one
    assert logged == [str(e) for e in epochs]
    for metric in spec.metrics:
        if metric.startswith("val/"):  # same seed, same checkpoint: the same model; the killed trial restarted in
            # another process, and reused workers ran other trials before, so this is reproducibility under the seed
            # too, and no trial leaves state behind for the next in its worker
            assert resumed.metrics[metric] == pytest.approx(straight.metrics[metric], abs=1e-6), metric
    if config["eval/test"]:  # the held-out test split, at the last epoch, inside its interval, killed or not
        final = straight.metrics
        assert final["test/images"] > 0
        assert final["test/accuracy_ci_low"] <= final["test/accuracy"] <= final["test/accuracy_ci_high"]
        assert resumed.metrics["test/accuracy"] == pytest.approx(final["test/accuracy"], abs=1e-6)


@pytest.mark.slow
def test_a_trial_killed_before_its_first_checkpoint_retrains_from_the_start_to_the_same_result(runs):
    config, straight, _, _ = runs(UNSAVED)
    result, log = runs(f"{UNSAVED}-unsaved")
    assert config["train/checkpoint_s"] == 60 and result.error is None, result.error
    assert [(e["event"], e.get("epoch", e.get("resumed"))) for e in entries(log)] == [
        ("start", False), ("report", 1), ("start", False), ("report", 1), ("report", 2)]  # no checkpoint at epoch 1
    for metric in TRAINABLES[UNSAVED].metrics:
        if metric.startswith("val/"):
            assert result.metrics[metric] == pytest.approx(straight.metrics[metric], abs=1e-6), metric
    assert result.checkpoint is not None  # the last epoch always saves one


@pytest.mark.slow
def test_triplet_runs_three_phases_and_resumes_mid_phase(runs):
    _, straight, resumed, _ = runs("triplet")
    history = straight.metrics_dataframe
    assert list(history["epoch"]) == [1, 2, 3, 4] and list(history["phase"]) == [1, 2, 2, 3]
    phase2 = history[history["phase"] == 2]  # the k-NN on the embeddings predicts in the embedding phase
    assert list(phase2["val/accuracy"]) == pytest.approx(list(phase2["val/knn_accuracy"]))
    assert resumed.metrics["phase"] == 3
    # eval/test: the final classifier, once
    assert "test/accuracy" not in history.iloc[-2] or np.isnan(history.iloc[-2]["test/accuracy"])
