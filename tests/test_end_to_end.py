"""The main job end to end: `tune-run spaces/multitask.py --smoke-test` on a local Ray cluster,
tracked by a real MLflow server, then tune-export and tune-train of the best config (the
session's fixtures e2e and e2e_retrain in tests/conftest.py, which tests/test_browser.py views)."""
import json
import platform
import re

import optuna
import pytest
import torch

from conftest import E2E_SAMPLES as SAMPLES
from mlflow_server.selection import pareto_front
from mlflow_server.records import TrialRecord
from search.home import ExperimentState

OBJECTIVES = {"val/f1_macro": "max", "perf/train_images_per_s": "max"}
pytestmark = pytest.mark.slow  # each test reads the one experiment and its re-training


def test_one_parent_run_and_one_nested_run_per_trial(e2e):
    assert len(e2e["parents"]) == 1
    parent = e2e["parents"][0].info.run_id
    assert e2e["parents"][0].info.status == "FINISHED"
    assert len(e2e["trials"]) == SAMPLES
    assert len({r.data.tags["medtune.trial_id"] for r in e2e["trials"]}) == SAMPLES
    for run in e2e["trials"]:
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.info.status in ("FINISHED", "KILLED")
        assert run.data.tags["medtune.space_file"].endswith("multitask.py")
        assert run.data.tags["medtune.data_fingerprint"]
        machine = {k: v for k, v in run.data.tags.items() if k.startswith("machine/")}  # where it trained
        assert machine == {"machine/host": platform.node(), "machine/cpu": machine["machine/cpu"],
                           "machine/cpu_capability": torch.backends.cpu.get_cpu_capability(),
                           "machine/torch": torch.__version__} and machine["machine/cpu"]
        assert not any(key.startswith("machine/") for key in run.data.metrics)
        assert re.fullmatch(r"t0[1-4] \w+ test_resnet lr=\S+", run.info.run_name), run.info.run_name


def test_parent_run_carries_the_trial_counts_and_the_best_objectives(e2e):
    metrics = e2e["parents"][0].data.metrics
    statuses = [r.info.status for r in e2e["trials"]]
    assert {key: metrics[f"trials/{key}"] for key in ("finished", "stopped", "failed")} == \
        {"finished": statuses.count("FINISHED"), "stopped": statuses.count("KILLED"), "failed": 0}
    best = max((r for r in e2e["trials"] if r.info.status == "FINISHED"), key=lambda r: r.data.metrics["val/f1_macro"])
    assert {key: metrics[key] for key in OBJECTIVES} == {key: best.data.metrics[key] for key in OBJECTIVES}


def test_the_printed_link_opens_the_runs_best_first_with_the_objectives_as_columns(e2e):
    experiment = e2e["client"].get_experiment_by_name("e2e")
    link = f"/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning&viewStateShareKey=medtune"
    assert f"MLflow: {e2e['client'].tracking_uri}{link}" in e2e["out"]
    view = json.loads(experiment.tags["mlflow.sharedViewState.medtune"])
    assert (view["orderByKey"], view["orderByAsc"]) == ("metrics.`val/f1_macro`", False)
    assert view["selectedColumns"][:2] == ["metrics.`val/f1_macro`", "metrics.`perf/train_images_per_s`"]
    assert "params.`model/arch`" in view["selectedColumns"] or \
        len({r.data.params["model/arch"] for r in e2e["trials"]}) == 1  # only the keys that vary


def test_every_trial_has_sampled_params_and_a_point_per_epoch(e2e):
    client = e2e["client"]
    searched = {"model/arch", "model/frozen_layers", "data/fraction", "loss/cls_weight", "loss/seg", "aug/hflip"}
    for run in e2e["trials"]:
        assert searched <= set(run.data.params)
        assert run.data.params["model/encoder"] == "tu-test_resnet"  # pinned by SMOKE, not searched
        epochs = None
        for metric in [*OBJECTIVES, "val/dice", "val/accuracy", "perf/epoch_s"]:
            history = client.get_metric_history(run.info.run_id, metric)
            steps = sorted(m.step for m in history)
            epochs = epochs or len(steps)
            assert steps == list(range(1, epochs + 1)), (metric, steps)
        assert (epochs == 2) == (run.info.status == "FINISHED")


def test_optuna_states_match_the_mlflow_statuses_with_every_epoch(e2e):
    """Each trial ASHA stopped is PRUNED in the study (KILLED in MLflow), each finished one COMPLETE
    with its last epoch's values, and the study holds every epoch of every trial (two objectives:
    user attributes). tests/test_optuna_states.py makes ASHA stop a trial for sure."""
    client = e2e["client"]
    study = optuna.load_study(study_name="e2e", storage=ExperimentState(str(e2e["work"] / "runs"), "e2e").optuna_storage)
    runs = {r.data.tags["medtune.trial_id"]: r for r in e2e["trials"]}
    assert sorted(t.user_attrs["trial_id"] for t in study.trials) == sorted(runs)
    assert all(t.user_attrs["mlflow_run_id"] == runs[t.user_attrs["trial_id"]].info.run_id for t in study.trials)
    assert study.metric_names == list(OBJECTIVES)
    state = {"FINISHED": "COMPLETE", "KILLED": "PRUNED", "FAILED": "FAIL"}
    for trial in study.trials:
        run = runs[trial.user_attrs["trial_id"]]
        assert trial.state.name == state[run.info.status], (trial.number, run.info.status)
        for metric in OBJECTIVES:
            history = client.get_metric_history(run.info.run_id, metric)
            assert trial.user_attrs[f"intermediate/{metric}"] == {str(m.step): m.value for m in history}
        if trial.state.name == "COMPLETE":
            assert trial.values == [run.data.metrics[metric] for metric in OBJECTIVES]


def test_pareto_artifact_names_only_non_dominated_finished_trials(e2e):
    client, parent = e2e["client"], e2e["parents"][0].info.run_id
    with open(client.download_artifacts(parent, "pareto.json")) as f:
        front = {m["run_id"] for m in json.load(f)["front"]}
    finished = [r for r in e2e["trials"] if r.info.status == "FINISHED"]
    records = [TrialRecord(r.info.run_id, "", r.info.status, {}, r.data.metrics) for r in finished]
    expected = {r.run_id for r in pareto_front(records, OBJECTIVES)}
    assert front and front == expected
    for run in finished:  # independently: no finished trial beats a front member on both objectives
        for member in (r for r in finished if r.info.run_id in front):
            m, o = member.data.metrics, run.data.metrics
            assert not all(o[k] >= m[k] for k in OBJECTIVES) or all(o[k] == m[k] for k in OBJECTIVES)
    with open(client.download_artifacts(parent, "pareto.html")) as f:
        html = f.read()
    assert "plotly" in html and all(r.data.tags["medtune.trial_id"] in html for r in finished)
    out = e2e["out"]
    assert "Pareto front" in out and "MLflow: http://127.0.0.1" in out and "'e2e'" in out
    assert f"{SAMPLES}/{SAMPLES} trials" in out


def test_exported_best_config_retrains_to_the_same_result(e2e, e2e_retrain):
    doc = e2e_retrain["doc"]
    assert doc["trainable"] == "multitask" and doc["objectives"] == OBJECTIVES
    best = doc["best"]
    finished = [r for r in e2e["trials"] if r.info.status == "FINISHED"]
    assert best["metrics"]["val/f1_macro"] == max(r.data.metrics["val/f1_macro"] for r in finished)
    assert {m["run_id"] for m in doc["pareto"]} >= {best["run_id"]}
    assert "Final metrics" in e2e_retrain["out"]
    runs = e2e_retrain["runs"]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    searched = next(r for r in finished if r.info.run_id == best["run_id"])
    machine = {k: v for k, v in runs[0].data.tags.items() if k.startswith("machine/")}
    assert machine and machine == {k: v for k, v in searched.data.tags.items() if k.startswith("machine/")}
    for metric in ("val/f1_macro", "val/accuracy", "val/dice", "val/loss"):
        assert runs[0].data.metrics[metric] == pytest.approx(best["metrics"][metric], abs=1e-6), metric


def test_retrain_reports_test_metrics_inside_their_intervals(e2e, e2e_retrain):
    (run,), client = e2e_retrain["runs"], e2e["client"]
    assert re.search(r"^\s+accuracy\s+[\d.]+\s+[\d.]+ \[[\d.]+, [\d.]+\]$", e2e_retrain["out"], re.M)  # its table
    metrics = run.data.metrics
    assert metrics["test/images"] > 0 and "test/loss" in metrics
    assert not any("confusion_matrix" in key for key in metrics)  # the matrices are artifacts, not metrics
    for name in ("accuracy", "f1_macro", "auroc", "dice", "dice_lesion", "dice_pooled", "iou", "hd95",
                 "sensitivity_at_spec90", "sensitivity_at_spec95", "ece", "dice_gated"):
        low, value, high = (metrics[f"test/{name}{end}"] for end in ("_ci_low", "", "_ci_high"))
        assert low <= value <= high, (name, low, value, high)
    for file in ("confusion_matrix.json", "test_confusion_matrix.json"):
        with open(client.download_artifacts(run.info.run_id, file)) as f:
            matrix = json.load(f)
        assert matrix["classes"] == ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
        assert (matrix["rows"], matrix["columns"]) == ("true", "predicted") and len(matrix["matrix"]) == 4
    assert sum(map(sum, matrix["matrix"])) == metrics["test/images"]
