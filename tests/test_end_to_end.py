"""The main job end to end: `tune-run spaces/multitask.py --smoke-test` on a local Ray cluster,
tracked by a real MLflow server, then tune-export and tune-train of the best config (the
commands' functions, run in this process on the session's Ray cluster)."""
import contextlib
import io
import json
import os

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from mlflow_server.selection import pareto_front
from mlflow_server.records import TrialRecord
from search.cli import export_main, run_main, train_main
from search.home import ExperimentState

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = 4
OBJECTIVES = {"val/f1_macro": "max", "perf/train_images_per_s": "max"}
pytestmark = pytest.mark.slow  # each test reads the one experiment and its re-training


def run_cli(main, *args: str, env: dict, cwd: str) -> str:
    """A command's main function run in this process with env set and cwd as its folder; its
    console output (it must exit 0)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    assert code == 0, f"{main.__name__} failed:\n{out.getvalue()[-3000:]}\n{err.getvalue()[-3000:]}"
    return out.getvalue()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, mlflow_server, ray_address):
    work = tmp_path_factory.mktemp("work")
    env = {"MEDTUNE_HOME": str(work / "runs"), "MEDTUNE_CACHE": str(work / "cache"),
           "MLFLOW_TRACKING_URI": mlflow_server, "RAY_ADDRESS": ray_address}
    out = run_cli(run_main, os.path.join(ROOT, "spaces", "multitask.py"), "--smoke-test",
                  "--name", "e2e", "--num-samples", str(SAMPLES), env=env, cwd=str(work))
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("e2e")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("medtune.role") == "parent"]
    trials = [r for r in runs if r.data.tags.get("medtune.role") == "trial"]
    return {"out": out, "client": client, "parents": parents, "trials": trials, "env": env, "work": work}


def test_one_parent_run_and_one_nested_run_per_trial(smoke):
    assert len(smoke["parents"]) == 1
    parent = smoke["parents"][0].info.run_id
    assert smoke["parents"][0].info.status == "FINISHED"
    assert len(smoke["trials"]) == SAMPLES
    assert len({r.data.tags["medtune.trial_id"] for r in smoke["trials"]}) == SAMPLES
    for run in smoke["trials"]:
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.info.status in ("FINISHED", "KILLED")
        assert run.data.tags["medtune.space_file"].endswith("multitask.py")
        assert run.data.tags["medtune.data_fingerprint"]


def test_every_trial_has_sampled_params_and_a_point_per_epoch(smoke):
    client = smoke["client"]
    searched = {"model/arch", "model/frozen_layers", "data/fraction", "loss/cls_weight", "loss/seg", "aug/hflip"}
    for run in smoke["trials"]:
        assert searched <= set(run.data.params)
        assert run.data.params["model/encoder"] == "tu-test_resnet"  # pinned by SMOKE, not searched
        epochs = None
        for metric in [*OBJECTIVES, "val/dice", "val/accuracy", "perf/epoch_s"]:
            history = client.get_metric_history(run.info.run_id, metric)
            steps = sorted(m.step for m in history)
            epochs = epochs or len(steps)
            assert steps == list(range(1, epochs + 1)), (metric, steps)
        assert (epochs == 2) == (run.info.status == "FINISHED")


def test_optuna_states_match_the_mlflow_statuses_with_every_epoch(smoke):
    """Each trial ASHA stopped is PRUNED in the study (KILLED in MLflow), each finished one COMPLETE
    with its last epoch's values, and the study holds every epoch of every trial (two objectives:
    user attributes). tests/test_optuna_states.py makes ASHA stop a trial for sure."""
    client = smoke["client"]
    study = optuna.load_study(study_name="e2e", storage=ExperimentState(str(smoke["work"] / "runs"), "e2e").optuna_storage)
    runs = {r.data.tags["medtune.trial_id"]: r for r in smoke["trials"]}
    assert sorted(t.user_attrs["trial_id"] for t in study.trials) == sorted(runs)
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


def test_pareto_artifact_names_only_non_dominated_finished_trials(smoke):
    client, parent = smoke["client"], smoke["parents"][0].info.run_id
    with open(client.download_artifacts(parent, "pareto.json")) as f:
        front = {m["run_id"] for m in json.load(f)["front"]}
    finished = [r for r in smoke["trials"] if r.info.status == "FINISHED"]
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
    out = smoke["out"]
    assert "Pareto front" in out and "MLflow: http://127.0.0.1" in out and "'e2e'" in out
    assert f"{SAMPLES}/{SAMPLES} trials" in out


@pytest.fixture(scope="module")
def retrain(smoke):
    """tune-export of the smoke experiment, then tune-train of its best config (evaluated on test)."""
    work, env = smoke["work"], smoke["env"]
    run_cli(export_main, "e2e", "-o", "best.yaml", env=env, cwd=str(work))
    with open(work / "best.yaml") as f:
        doc = yaml.safe_load(f)
    out = run_cli(train_main, "best.yaml", "--name", "e2e-retrain", "--set", "eval/bootstrap=200",
                  env=env, cwd=str(work))
    client = smoke["client"]
    runs = client.search_runs([client.get_experiment_by_name("e2e-retrain").experiment_id],
                              "tags.`medtune.role` = 'trial'")
    return {"doc": doc, "out": out, "runs": runs}


def test_exported_best_config_retrains_to_the_same_result(smoke, retrain):
    doc = retrain["doc"]
    assert doc["trainable"] == "multitask" and doc["objectives"] == OBJECTIVES
    best = doc["best"]
    finished = [r for r in smoke["trials"] if r.info.status == "FINISHED"]
    assert best["metrics"]["val/f1_macro"] == max(r.data.metrics["val/f1_macro"] for r in finished)
    assert {m["run_id"] for m in doc["pareto"]} >= {best["run_id"]}
    assert "Final metrics" in retrain["out"]
    runs = retrain["runs"]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    for metric in ("val/f1_macro", "val/accuracy", "val/dice", "val/loss"):
        assert runs[0].data.metrics[metric] == pytest.approx(best["metrics"][metric], abs=1e-6), metric


def test_retrain_reports_test_metrics_inside_their_intervals(smoke, retrain):
    (run,), client = retrain["runs"], smoke["client"]
    assert "  test: accuracy=" in retrain["out"]
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
