"""The Optuna study records how each trial really ended, as MLflow does: COMPLETE for a trial that
reached train/epochs, PRUNED for one the scheduler stopped, FAIL for one that raised, with every
epoch's values, also across a save and restore (--resume). The searcher is driven through the
hooks Ray Tune calls, in the order it calls them (on_trial_result is skipped for the result on
which the scheduler stops a trial)."""
import math

import optuna
from optuna.storages import RDBStorage

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
