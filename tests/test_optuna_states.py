"""The Optuna study records how each trial really ended, as MLflow does: COMPLETE for a trial that
reached train/epochs, PRUNED for one the scheduler stopped, FAIL for one that raised, with every
epoch's values, also across a save and restore (--resume). The searcher is driven through the
hooks Ray Tune calls, in the order it calls them (on_trial_result is skipped for the result on
which the scheduler stops a trial)."""
import contextlib
import io
import math

import optuna
import pytest
from mlflow import MlflowClient
from optuna.storages import RDBStorage

from conftest import join_ray
from search.experiment import Settings
from search.home import ExperimentState
from search.runner import run_experiment
from search.searcher import ResumableOptunaSearch

EPOCHS = 3


def space(trial):
    trial.suggest_float("optim/lr", 1e-4, 1e-2, log=True)
    return {"train/epochs": EPOCHS}


def searcher(tmp_path, metric, mode):
    return ResumableOptunaSearch(space=space, metric=metric, mode=mode, study_name="states",
                                 storage=RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}"))


def run(search, trial_id: str, values: list, end: str = "stop") -> None:
    """A trial reporting `values` (one per epoch, a tuple per epoch with several objectives), then:
    "stop" (scheduler stop or the last epoch), "error" or "running" (no end yet)."""
    search.suggest(trial_id)
    metrics = search.metric if isinstance(search.metric, list) else [search.metric]
    results = [{"epoch": e, **dict(zip(metrics, v if isinstance(v, tuple) else (v,)))}
               for e, v in enumerate(values, 1)]
    for result in results[:-1] if end == "stop" else results:
        search.on_trial_result(trial_id, result)
    if end == "stop":
        search.on_trial_complete(trial_id, result=results[-1] if results else None)
    elif end == "error":
        search.on_trial_complete(trial_id, error=True)


def by_ray_id(storage_path) -> dict[str, optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="states", storage=f"sqlite:///{storage_path}")
    return {t.user_attrs["trial_id"]: t for t in study.trials}


def test_one_objective_states_values_and_epochs_also_after_a_restore(tmp_path):
    search = searcher(tmp_path, "val/f1", "max")
    run(search, "done", [0.5, 0.6, 0.7])
    run(search, "stopped", [0.4])  # ASHA stopped it on its first epoch
    run(search, "failed", [0.9, 0.95], end="error")
    run(search, "nan", [0.5, 0.6, math.nan])  # reached its budget, but Optuna takes no NaN
    run(search, "never_ran", [])  # stopped while pending
    run(search, "resumed", [0.3], end="running")
    search.save(str(tmp_path / "searcher.pkl"))

    restored = searcher(tmp_path, "val/f1", "max")
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_result("resumed", {"epoch": 2, "val/f1": 0.35})
    restored.on_trial_complete("resumed", result={"epoch": 3, "val/f1": 0.8})

    trials = by_ray_id(tmp_path / "optuna.db")
    states = {trial_id: t.state.name for trial_id, t in trials.items()}
    assert states == {"done": "COMPLETE", "stopped": "PRUNED", "failed": "FAIL", "nan": "FAIL",
                      "never_ran": "PRUNED", "resumed": "COMPLETE"}
    assert trials["done"].value == 0.7 and trials["resumed"].value == 0.8
    assert trials["done"].intermediate_values == {1: 0.5, 2: 0.6, 3: 0.7}
    assert trials["stopped"].intermediate_values == {1: 0.4} and trials["stopped"].value == 0.4
    assert trials["failed"].intermediate_values == {1: 0.9, 2: 0.95}
    assert trials["resumed"].intermediate_values == {1: 0.3, 2: 0.35, 3: 0.8}
    assert optuna.load_study(study_name="states", storage=f"sqlite:///{tmp_path / 'optuna.db'}").metric_names == [
        "val/f1"]


def test_several_objectives_keep_their_epochs_as_user_attributes(tmp_path):
    search = searcher(tmp_path, ["val/f1", "perf/speed"], ["max", "max"])
    run(search, "done", [(0.5, 10.0), (0.6, 11.0), (0.7, 12.0)])
    run(search, "stopped", [(0.4, 9.0), (0.45, 9.5)])
    run(search, "failed", [(0.9, 8.0)], end="error")

    trials = by_ray_id(tmp_path / "optuna.db")
    assert {k: t.state.name for k, t in trials.items()} == {"done": "COMPLETE", "stopped": "PRUNED", "failed": "FAIL"}
    assert trials["done"].values == [0.7, 12.0]
    assert trials["stopped"].user_attrs["intermediate/val/f1"] == {"1": 0.4, "2": 0.45}
    assert trials["stopped"].user_attrs["intermediate/perf/speed"] == {"1": 9.0, "2": 9.5}
    assert trials["done"].user_attrs["intermediate/val/f1"] == {"1": 0.5, "2": 0.6, "3": 0.7}
    study = optuna.load_study(study_name="states", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert study.metric_names == ["val/f1", "perf/speed"]


def test_an_epoch_retrained_after_a_retry_keeps_its_first_value(tmp_path):
    search = searcher(tmp_path, "val/f1", "max")
    run(search, "retried", [0.5, 0.6], end="running")
    search.on_trial_result("retried", {"epoch": 2, "val/f1": 0.65})  # restarted from its epoch-1 checkpoint
    search.on_trial_complete("retried", result={"epoch": 3, "val/f1": 0.7})
    trial = by_ray_id(tmp_path / "optuna.db")["retried"]
    assert trial.intermediate_values == {1: 0.5, 2: 0.6, 3: 0.7} and trial.state.name == "COMPLETE"


ASHA_SPACE = '''"""Three trials, one at a time; the second trains at 128 px, the others at 32 px, so it is the
slowest at epoch 1 by far and ASHA (reduction factor 2) stops it there."""
TRAINABLE = "classification"
OBJECTIVES = {"perf/train_images_per_s": "max"}
DEFAULTS = {"model/backbone": "test_resnet", "train/epochs": 2, "train/batch_size": 8, "data/fraction": 0.25,
            "train/bn_reestimate_images": 32, "figures/draw": False}


def space(trial):
    size = 128 if trial.number == 1 else 32
    trial.suggest_int("data/image_size", size, size)
'''


@pytest.mark.slow
def test_a_trial_asha_stops_is_pruned_in_the_study_and_killed_in_mlflow(tracking_uri, tmp_path):
    join_ray()
    (tmp_path / "asha_space.py").write_text(ASHA_SPACE)
    settings = Settings(name=f"asha-{tmp_path.name}", space_path=str(tmp_path / "asha_space.py"), num_samples=3,
                        scheduler="asha", sampler="random", max_concurrent=1)
    home = str(tmp_path / "runs")
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert run_experiment(settings, home) == 0, out.getvalue()[-3000:]
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(settings.name).experiment_id],
                              "tags.`medtune.role` = 'trial'")
    runs = {r.data.tags["medtune.trial_id"]: r for r in runs}
    study = optuna.load_study(study_name=settings.name, storage=ExperimentState(home, settings.name).optuna_storage)
    state = {"FINISHED": "COMPLETE", "KILLED": "PRUNED", "FAILED": "FAIL"}
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED", "COMPLETE"]
    for trial in study.trials:
        run = runs[trial.user_attrs["trial_id"]]
        assert trial.state.name == state[run.info.status]
        history = client.get_metric_history(run.info.run_id, "perf/train_images_per_s")
        assert trial.intermediate_values == {m.step: m.value for m in history}
        assert trial.value == run.data.metrics["perf/train_images_per_s"]  # the last epoch's
    assert list(study.trials[1].intermediate_values) == [1]
