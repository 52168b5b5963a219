"""Space files load and validate before any trial; --set overrides are type-checked."""
import pickle

import optuna
import pytest

from search.cli import run_main
from search.errors import UsageError
from search.overrides import parse_sets
from search.sampling import SpaceSampler
from search.spacefile import load_space

GOOD = '''
TRAINABLE = "classification"
OBJECTIVES = {"val/f1_macro": "max", "perf/train_images_per_s": "max"}
DEFAULTS = {"optim/lr": 1, "train/epochs": 3}
SMOKE = {"model/backbone": "test_resnet"}

def space(trial):
    trial.suggest_categorical("model/backbone", ["resnet18", "resnet34"])
    if trial.suggest_categorical("optim/name", ["adam", "sgd"]) == "sgd":
        trial.suggest_float("optim/momentum", 0.5, 0.99)
'''


def write(tmp_path, text, name="space.py"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_good_space_loads_with_defaults_merged(tmp_path):
    space = load_space(write(tmp_path, GOOD))
    assert space.trainable.name == "classification"
    assert space.primary == ("val/f1_macro", "max")
    assert space.defaults["optim/lr"] == 1.0 and isinstance(space.defaults["optim/lr"], float)
    assert space.defaults["train/epochs"] == 3
    assert space.smoke == {"model/backbone": "test_resnet"}


@pytest.mark.parametrize("text, needle", [
    (GOOD.replace('TRAINABLE = "classification"', 'TRAINABLE = "nope"'), "'nope'"),
    (GOOD.replace('"val/f1_macro": "max"', '"val/dice": "max"'), "'val/dice'"),
    (GOOD.replace('"val/f1_macro": "max"', '"val/f1_macro": "up"'), "'up'"),
    (GOOD.replace('"train/epochs": 3', '"train/epoch": 3'), "'train/epoch'"),
    (GOOD.replace('"train/epochs": 3', '"train/epochs": "3"'), "train/epochs='3'"),
    (GOOD.replace("def space(trial)", "def not_space(trial)"), "space(trial)"),
    ("TRAINABLE = (", "failed to import"),
])
def test_bad_space_files_are_clear_errors(tmp_path, text, needle):
    with pytest.raises(UsageError) as info:
        load_space(write(tmp_path, text))
    assert needle in str(info.value)


def test_missing_and_non_python_space_files(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_space(str(tmp_path / "absent.py"))
    with pytest.raises(UsageError, match="not a Python file"):
        load_space(write(tmp_path, GOOD, name="space.yaml"))


def test_set_overrides_are_typed_and_unknown_keys_list_known_ones(tmp_path):
    known = load_space(write(tmp_path, GOOD)).defaults
    assert parse_sets(["optim/lr=1e-4", "train/epochs=5", "model/backbone=test_vit"], known) == {
        "optim/lr": 1e-4, "train/epochs": 5, "model/backbone": "test_vit"}
    with pytest.raises(UsageError, match="takes an integer") as info:
        parse_sets(["train/epochs=five"], known)
    assert "five" in str(info.value)
    with pytest.raises(UsageError, match="known keys are: .*optim/lr") as info:
        parse_sets(["optim/lrr=1"], known)
    assert "'optim/lrr'" in str(info.value)
    with pytest.raises(UsageError, match="key=value"):
        parse_sets(["optim/lr"], known)


def test_pinned_keys_are_not_searched_and_conditionals_work(tmp_path):
    space = load_space(write(tmp_path, GOOD))
    constants = {**space.defaults, "model/backbone": "test_resnet"}
    sampler = SpaceSampler(space, constants, {"model/backbone"})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        fixed = sampler(trial)
        assert "model/backbone" not in trial.params
        assert fixed["model/backbone"] == "test_resnet" and fixed["train/epochs"] == 3
        assert not set(fixed) & set(trial.params)
        seen.add(trial.params["optim/name"])
        assert ("optim/momentum" in trial.params) == (trial.params["optim/name"] == "sgd")
    assert seen == {"adam", "sgd"}


def test_space_sampling_an_unknown_key_is_an_error(tmp_path):
    text = GOOD.replace('"optim/momentum"', '"optim/momentun"')
    space = load_space(write(tmp_path, text))
    sampler = SpaceSampler(space, space.defaults, set())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    with pytest.raises(UsageError, match="optim/momentun"):
        for _ in range(20):
            sampler(study.ask())


COUNTING = GOOD + '''
import os
with open(os.environ["SPACE_IMPORTS"], "a") as f:
    f.write("x")
'''


def test_a_command_executes_the_space_file_once(tmp_path, monkeypatch, capsys):
    """tune-run loads, validates and samples the space (preflight) from one import of the file; the
    searcher Ray pickles with the experiment imports it again only as a restored copy (--resume)."""
    imports = tmp_path / "imports"
    imports.touch()
    monkeypatch.setenv("SPACE_IMPORTS", str(imports))
    monkeypatch.setenv("MEDTUNE_HOME", str(tmp_path / "runs"))
    path = write(tmp_path, COUNTING)
    assert run_main([path, "--data", str(tmp_path / "nowhere")]) == 2  # refused by the data check, the last one
    assert "does not exist" in capsys.readouterr().err and imports.read_text() == "x"

    space = load_space(path)
    sampler = SpaceSampler(space, space.defaults, set())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    sampler(study.ask())
    assert imports.read_text() == "xx"
    pickle.loads(pickle.dumps(sampler))(study.ask())
    assert imports.read_text() == "xxx"
