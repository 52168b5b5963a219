"""The contract every registered trainable keeps, checked on a real local Ray cluster with tiny models: it
reports its declared metrics every epoch, respects train/epochs, leaves a checkpoint, is reproducible under
its seed, and a worker killed mid-trial (SIGKILL) resumes from its checkpoint to exactly the result of an
uninterrupted run. Both runs of a trainable go through one Tuner, side by side.

Each trainable's tiny config is data here, in TINY, keyed by its registry name: it is what makes a trial
take seconds (test models, 32 px, a fraction of the generated images) and test code is its only user, so it
stays out of the registry. A registered trainable without one fails test_every_trainable_has_a_tiny_config.
"""
import os

import numpy as np
import pytest
from ray import tune

from trainables.registry import TRAINABLES, nested_config
from trials import entries, recorded

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = {"data/image_size": 32, "train/epochs": 2, "train/batch_size": 8, "optim/lr": 1e-3, "data/fraction": 0.25,
        "aug/hflip": 0.5, "aug/rotation": 10.0, "model/frozen_layers": 1, "optim/schedule": "cosine",
        "optim/warmup_epochs": 1}
TINY = {
    "classification": {"model/backbone": "test_resnet", "data/workers": 2},  # loader workers in a Ray worker
    "segmentation": {"model/arch": "fpn", "model/encoder": "tu-test_resnet", "loss/seg": "dice_bce",
                     "gate/class": "Normal", "gate/backbone": "test_resnet"},
    "multitask": {"model/encoder": "tu-test_resnet", "loss/cls_weight": 0.3, "gate/class": "Normal"},
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


def straight_and_killed(name: str, config: dict, kill_epoch: int, log: str, storage: str):
    """Two trials of config side by side in one Tuner: one uninterrupted, one whose worker is killed after
    `kill_epoch` and restarted from its checkpoint."""
    trainable = TRAINABLES[name].function()
    killed = recorded(trainable, log, kill_after_epoch=kill_epoch)

    def run(config):
        (killed if config["kill"] else trainable)({k: v for k, v in config.items() if k != "kill"})

    tuner = tune.Tuner(
        tune.with_resources(run, {"cpu": 1}),
        param_space={**nested_config(config), "kill": tune.grid_search([False, True])},
        run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=1)),
    )
    results = {result.config["kill"]: result for result in tuner.fit()}
    for result in results.values():
        assert result.error is None, result.error
    return results[False], results[True]


@pytest.fixture(scope="module")
def runs(ray_cluster):
    """name -> (its tiny config, the straight result, the killed-and-resumed result, the epochs it logged),
    each trainable run once for the module."""
    done = {}

    def run(name: str):
        if name not in done:
            config = tiny_config(name)
            log = os.path.join(ray_cluster, f"{name}-epochs.log")
            straight, resumed = straight_and_killed(name, config, config["train/epochs"] // 2, log, ray_cluster)
            done[name] = config, straight, resumed, [str(e["epoch"]) for e in entries(log) if e["event"] == "report"]
        return done[name]

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
        if metric.startswith("val/"):  # same seed, same checkpoint: the same model; the two trials ran in
            # separate processes, the killed one restarted in a third, so this is reproducibility under the seed too
            assert resumed.metrics[metric] == pytest.approx(straight.metrics[metric], abs=1e-6), metric
    if config["eval/test"]:  # the held-out test split, at the last epoch, inside its interval, killed or not
        final = straight.metrics
        assert final["test/images"] > 0
        assert final["test/accuracy_ci_low"] <= final["test/accuracy"] <= final["test/accuracy_ci_high"]
        assert resumed.metrics["test/accuracy"] == pytest.approx(final["test/accuracy"], abs=1e-6)


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
