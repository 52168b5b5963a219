"""Every space file under spaces/: it loads, 20 configs sampled at random are valid, and one smoke
trial of it (smaller still than its SMOKE: TINY) runs on generated data in its layout on a real local
Ray cluster (all space files' trials in one Tuner, two at a time)."""
import functools
import glob
import math
import os

import pytest

from search.experiment import Settings
from search.preflight import sample_configs
from search.spacefile import load_space
from trainables.registry import nested_config
from trials import one_tuner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACES = sorted(p for p in glob.glob(os.path.join(ROOT, "spaces", "*.py")) if not p.endswith("__init__.py"))
IDS = [os.path.basename(p)[:-3] for p in SPACES]
# The smoke trials here check that each space's trainable runs in its layout, not that it learns (the README's
# table of smoke studies does): fewer, smaller images and BatchNorm statistics re-estimated on fewer of them.
TINY = {"data/image_size": 32, "data/fraction": 0.5, "train/bn_reestimate_images": 32, "figures/draw": False}


def smallest_size(config: dict, trainable: str) -> int:
    """TINY's image size, doubled until the config's model takes it (e.g. PAN: 128 px) as the driver's model
    check (trainables.models.check_model_config) decides, at most the config's own size."""
    from trainables.models import check_model_config

    size = TINY["data/image_size"]
    while size < config["data/image_size"]:
        try:
            check_model_config({**config, "data/image_size": size}, trainable)
            break
        except ValueError:
            size *= 2
    return min(size, config["data/image_size"])


def test_every_study_has_a_space_file():
    studies = {"classification", "ssl_finetune", "zeroshot", "segmentation", "multitask", "medfmc",
               "brain_mri", "busi_cnn", "busi_segmentation", "busi_multitask", "covid_ct", "triplet"}
    assert studies <= set(IDS)


@pytest.mark.parametrize("path", SPACES, ids=IDS)
def test_space_loads_and_samples_20_valid_configs(path):
    space = load_space(path)
    assert space.doc.count("tune-run") >= 1, "the docstring gives the command"
    constants = Settings(name="t", space_path=path, num_samples=20).constants(space)
    configs, choices = sample_configs(space, constants, pinned=set(), n=20, seed=1)
    assert len(configs) == 20
    searched = {key for cfg in configs for key in cfg if cfg[key] != constants.get(key)}
    assert searched, "the space searches something"
    for cfg in configs:
        assert set(cfg) == set(space.defaults)  # a full config: every known key, no other


def test_a_pausing_scheduler_gets_a_checkpoint_every_epoch_unless_set():
    space = load_space(SPACES[0])
    settings = functools.partial(Settings, name="t", space_path=SPACES[0], num_samples=1)
    assert settings().constants(space)["train/checkpoint_s"] == 60  # asha stops trials, never resumes them
    assert settings(scheduler="hyperband").constants(space)["train/checkpoint_s"] == 0  # it pauses and resumes
    assert settings(scheduler="hyperband", overrides={"train/checkpoint_s": 5.0}).constants(space)[
        "train/checkpoint_s"] == 5.0  # --set wins


@pytest.fixture(scope="module")
def smoke_trials(ray_cluster):
    """One smoke trial per space file (its SMOKE overrides, one config sampled from its space(), one
    epoch a phase), all run by one Tuner on the module's Ray cluster; space file id -> (space, config, result)."""
    runs = {}
    for path, name in zip(SPACES, IDS):
        space = load_space(path)
        settings = Settings(name="t", space_path=path, num_samples=1, smoke_test=True)
        config = sample_configs(space, settings.constants(space), set(settings.pinned(space)), n=1, seed=3)[0][0]
        # one epoch per training phase: triplet's supervised and embedding phases come before its classifier's
        epochs = 1 + config.get("triplet/supervised_epochs", 0) + config.get("triplet/embedding_epochs", 0)
        size = smallest_size(config, space.trainable.name)
        runs[name] = (space, {**config, **TINY, "data/image_size": size, "train/epochs": epochs})
    results = one_tuner({name: functools.partial(space.trainable.function(), nested_config(config))
                         for name, (space, config) in runs.items()}, "spaces", ray_cluster)
    return {name: (*runs[name], results[name]) for name in IDS}


@pytest.mark.slow
@pytest.mark.parametrize("name", IDS)
def test_space_runs_one_smoke_trial(smoke_trials, name):
    space, config, result = smoke_trials[name]
    assert result.error is None, result.error
    assert result.metrics["epoch"] == config["train/epochs"]
    for metric in space.objectives:
        assert math.isfinite(result.metrics[metric]), (metric, result.metrics[metric])
