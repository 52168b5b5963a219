"""The contract every trainable keeps, checked on a real local Ray cluster with tiny models:
it reports its declared metrics every epoch, respects train/epochs, and a worker killed after
an epoch resumes from its checkpoint to exactly the result of an uninterrupted run."""
import os
import signal

import pytest
from ray import tune

from search.runner import lazy_trainable
from trainables.registry import TRAINABLES, nested_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {
    "classification": {"model/backbone": "test_resnet", "data/workers": 2},  # loader workers in a Ray worker
    "segmentation": {"model/arch": "fpn", "model/encoder": "tu-test_resnet", "loss/seg": "dice_bce",
                     "gate/class": "Normal", "gate/backbone": "test_resnet"},
    "multitask": {"model/encoder": "tu-test_resnet", "loss/cls_weight": 0.3, "gate/class": "Normal"},
    "zeroshot": {"clip/model": "medtune-tiny-clip", "clip/mode": "linear_probe",
                 "clip/model_config": os.path.join(ROOT, "spaces", "clip_configs", "medtune-tiny-clip.json")},
}  # triplet keeps the same contract in tests/test_triplet.py, killed mid-phase
BASE = {"data/image_size": 32, "train/epochs": 2, "train/batch_size": 8, "optim/lr": 1e-3,
        "data/fraction": 0.5, "aug/hflip": 0.5, "aug/rotation": 10.0, "model/frozen_layers": 1}


def killed_after_epoch(trainable, kill_epoch: int, log: str):
    """The trainable, but its worker process dies (SIGKILL) right after first reporting `kill_epoch`.

    Every reported epoch is appended to `log`, across the worker's restart.
    """
    def train(config):
        first_attempt = tune.get_checkpoint() is None
        report = tune.report

        def logged_report(metrics, checkpoint=None):
            report(metrics, checkpoint=checkpoint)
            with open(log, "a") as f:
                f.write(f"{metrics['epoch']}\n")
            if first_attempt and metrics["epoch"] == kill_epoch:
                os.kill(os.getpid(), signal.SIGKILL)

        tune.report = logged_report
        try:
            trainable(config)
        finally:
            tune.report = report

    return train


def run_trial(trainable, name: str, config: dict, storage: str, max_failures: int = 0):
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space=nested_config(config),
        run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=max_failures)),
    )
    result = tuner.fit()[0]
    assert result.error is None, result.error
    return result


@pytest.mark.parametrize("name", sorted(CASES))
def test_trainable_contract(ray_cluster, name):
    spec = TRAINABLES[name]
    config = {**spec.defaults, **BASE, **CASES[name]}
    straight = run_trial(lazy_trainable(spec), f"{name}-straight", config, ray_cluster)

    epochs = [str(e) for e in range(1, config["train/epochs"] + 1)]
    history = straight.metrics_dataframe
    assert list(history["epoch"].astype(str)) == epochs  # respects train/epochs, one report per epoch
    for metric in spec.metrics:
        assert history[metric].notna().all(), metric
    assert straight.checkpoint is not None
    assert history["perf/train_images_per_s"].gt(0).all()

    log = os.path.join(ray_cluster, f"{name}-epochs.log")
    resumed = run_trial(killed_after_epoch(lazy_trainable(spec), 1, log), f"{name}-killed", config,
                        ray_cluster, max_failures=1)
    with open(log) as f:  # killed after epoch 1; the restarted worker continued at epoch 2
        assert f.read().split() == epochs
    for metric in spec.metrics:
        if metric.startswith("val/"):  # same seed, same checkpoint: the same model
            assert resumed.metrics[metric] == pytest.approx(straight.metrics[metric], abs=1e-6), metric
