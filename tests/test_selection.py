"""One rule for "best" (mlflow_server.selection): only FINISHED trials with finite objectives, the
front ranked by the primary objective then the others then start order; the summary, the Pareto
artifacts and tune-export all follow it (a real MLflow server)."""
import contextlib
import io
import json
import math
import os

import pytest
from mlflow import MlflowClient

from mlflow_server.selection import best, eligible, pareto_front, reached_budget
from mlflow_server.records import CONFIG_FILE, PARENT, ROLE, TRIAL, TrialRecord
from mlflow_server.tracker import get_or_create_parent_run
from search.errors import UsageError
from search.experiment import Settings
from search.export import export_experiment
from search.home import ExperimentState
from search.runner import search_experiment
from search.summary import summarize
from search.spacefile import load_space

MAX2 = {"f1": "max", "speed": "max"}


def record(trial_id: str, status: str = "FINISHED", **metrics) -> TrialRecord:
    return TrialRecord(f"run-{trial_id}", trial_id, status, {}, metrics)


def ids(records) -> list[str]:
    return [r.trial_id for r in records]


def test_budget_rule():
    assert reached_budget({"epoch": 3}, {"train/epochs": 3})
    assert not reached_budget({"epoch": 2}, {"train/epochs": 3})
    assert not reached_budget(None, {"train/epochs": 3})  # stopped before its first result
    assert reached_budget({"training_iteration": 3}, {"train/epochs": 3})  # no `epoch`: Ray's iterations
    assert reached_budget({"epoch": 1}, {})  # no budget to fall short of


def test_pareto_front_known_answer_with_ties_and_missing_values():
    records = [
        record("0", f1=0.9, speed=10),
        record("1", f1=0.8, speed=20),
        record("2", f1=0.7, speed=15),  # dominated by 1
        record("3", f1=0.9, speed=10),  # duplicate of 0: kept with it, after it
        record("4", f1=math.nan, speed=100),  # not comparable
        record("5", f1=0.99),  # lacks an objective
        record("6", f1=0.5, speed=math.inf),  # not comparable
        record("7", f1=0.5, speed=30),
        record("8", f1=0.9, speed=5),  # dominated by 0 (equal f1, slower)
    ]
    assert ids(pareto_front(records, MAX2)) == ["0", "3", "1", "7"]  # best first
    assert pareto_front([], MAX2) == [] and best([], MAX2) is None


def test_pareto_front_respects_min_and_max():
    records = [record("0", f1=0.9, loss=0.5), record("1", f1=0.8, loss=0.2), record("2", f1=0.85, loss=0.6)]
    assert ids(pareto_front(records, {"f1": "max", "loss": "min"})) == ["0", "1"]
    assert ids(pareto_front(records, {"f1": "min", "loss": "min"})) == ["1"]
    assert ids(pareto_front(records, {"loss": "max"})) == ["2"]
    with pytest.raises(ValueError, match="'up'"):
        pareto_front(records, {"f1": "up"})


def test_nan_failed_and_stopped_trials_are_never_best():
    records = [
        record("nan", f1=math.nan, speed=100),
        record("failed", "FAILED", f1=1.0, speed=100),
        record("stopped", "KILLED", f1=0.99, speed=100),
        record("ok", f1=0.5, speed=1),
    ]
    assert ids(eligible(records, MAX2)) == ["ok"]
    assert best(records, MAX2).trial_id == "ok"
    assert best(records[:3], MAX2) is None


def test_ties_go_to_the_next_objective_then_to_the_earlier_trial():
    records = [record("a", f1=0.6, speed=10), record("b", f1=0.6, speed=20), record("c", f1=0.6, speed=20)]
    assert best(records, MAX2).trial_id == "b"  # a is dominated by b
    assert ids(pareto_front(records, MAX2)) == ["b", "c"]
    assert best(records, {"f1": "max"}).trial_id == "a"  # one objective: the earliest of the tied


# The experiment below, in start order: a NaN primary first (Python's max() would return it),
# a failed and a stopped trial better than any finished one, and a tie on the primary.
F1, SPEED = "val/f1_macro", "perf/train_images_per_s"
OBJECTIVES = {F1: "max", SPEED: "max"}  # those of spaces/classification.py
TRIALS = [("t_nan", "FINISHED", {F1: math.nan, SPEED: 1000.0}),
          ("t_low", "FINISHED", {F1: 0.6, SPEED: 10.0}),
          ("t_stopped", "KILLED", {F1: 0.99, SPEED: 50.0}),
          ("t_failed", "FAILED", {F1: 1.0, SPEED: 100.0}),
          ("t_best", "FINISHED", {F1: 0.6, SPEED: 20.0}),
          ("t_same", "FINISHED", {F1: 0.6, SPEED: 20.0})]
SPACE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "spaces", "classification.py")


@pytest.fixture
def experiment(tracking_uri, tmp_path):
    """A tracked experiment holding TRIALS; yields (client, parent run id, name)."""
    name = f"selection-{tmp_path.name}"
    client = MlflowClient(tracking_uri)
    parent = get_or_create_parent_run(client, name, {"medtune.trainable": "classification"})
    client.log_param(parent, "objectives", json.dumps(OBJECTIVES))
    client.log_dict(parent, {"settings": {"cpus_per_trial": 1.0, "gpus_per_trial": 0.0}}, "experiment.json")
    experiment_id = client.get_run(parent).info.experiment_id
    for start, (trial_id, status, metrics) in enumerate(TRIALS):
        run = client.create_run(experiment_id, start_time=1_000 + start,
                                tags={ROLE: "trial", PARENT: parent, TRIAL: trial_id}).info.run_id
        client.log_dict(run, {"optim/lr": 0.001 * (start + 1)}, CONFIG_FILE)
        for key, value in metrics.items():
            client.log_metric(run, key, value, step=1)
        client.set_terminated(run, status)
    return client, parent, name


def test_export_picks_the_finished_finite_best(experiment, tmp_path):
    _, _, name = experiment
    doc = export_experiment(name, str(tmp_path / "best.yaml"))
    assert doc["best"]["trial_id"] == "t_best"
    assert [m["trial_id"] for m in doc["pareto"]] == ["t_best", "t_same"]


def test_summary_and_pareto_artifact_pick_the_same_best(experiment, tmp_path):
    client, parent, name = experiment
    space = load_space(SPACE)
    settings = Settings(name=name, space_path=space.path, num_samples=len(TRIALS))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        outcome = summarize(client, search_experiment(settings, space), ExperimentState(str(tmp_path / "home"), name),
                            parent, {})
    assert outcome.code == 0
    table = out.getvalue().split(f"Pareto front ({F1} max, {SPEED} max):\n")[1].splitlines()
    assert [line.split()[0] for line in table[2:4]] == ["t_best", "t_same"]
    assert "Best: t_best " in out.getvalue()
    with open(client.download_artifacts(parent, "pareto.json")) as f:
        assert [m["trial_id"] for m in json.load(f)["front"]] == ["t_best", "t_same"]


def test_export_without_an_eligible_trial_is_a_clear_error(tracking_uri, tmp_path):
    client = MlflowClient(tracking_uri)
    parent = get_or_create_parent_run(client, "selection-none", {})
    client.log_param(parent, "objectives", json.dumps(MAX2))
    client.log_dict(parent, {"settings": {}}, "experiment.json")
    run = client.create_run(client.get_run(parent).info.experiment_id,
                            tags={ROLE: "trial", PARENT: parent, TRIAL: "t0"}).info.run_id
    client.log_metric(run, "f1", math.nan, step=1)
    client.log_metric(run, "speed", 1.0, step=1)
    client.set_terminated(run, "FINISHED")
    with pytest.raises(UsageError, match="no finished trial with finite f1, speed"):
        export_experiment("selection-none", str(tmp_path / "best.yaml"))
