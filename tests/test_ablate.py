"""tune-ablate end to end: bad input refused before any run, and a smoke ablation on the embedded data,
run by the engine on a real local Ray cluster and tracked on a real MLflow server, whose report has
every level with its seeds and whose CSV means are the means of the runs' logged values."""
import csv
import io
import json
import os

import numpy as np
import pytest
import ray
import yaml
from mlflow import MlflowClient

from conftest import join_ray
from search.ablation.grid import FACTOR_TAG, LEVEL_TAG, SEED_TAG
from search.cli import ablate_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = {"model/backbone": "test_resnet", "train/epochs": 2, "data/image_size": 32, "train/batch_size": 8,
          "optim/lr": 1e-3, "eval/bootstrap": 200, "train/bn_reestimate_images": 32,
          "figures/draw": False}


def exported(tmp, **config) -> str:
    """A tune-export YAML written by hand: the best trial of a classification search."""
    entry = {"trial_id": "t0", "run_id": "r0", "metrics": {}, "config": {**CONFIG, **config}}
    path = tmp / "best.yaml"
    path.write_text(yaml.safe_dump({"experiment": "handmade", "space": "spaces/classification.py",
                                    "trainable": "classification",
                                    "objectives": {"val/f1_macro": "max", "perf/train_images_per_s": "max"},
                                    "resources": {"cpus": 1.0, "gpus": 0.0}, "best": entry, "pareto": [entry]}))
    return str(path)


@pytest.fixture
def home(tmp_path, monkeypatch, tracking_uri):
    monkeypatch.setenv("MEDTUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


BAD = {
    "unknown factor key": (lambda t: [exported(t), "--factor", "optim/lrr=1,2"], "Unknown factor 'optim/lrr'"),
    "level of the wrong type": (lambda t: [exported(t), "--factor", "train/epochs=1,two"],
                                "train/epochs takes an integer"),
    "level out of range": (lambda t: [exported(t), "--factor", "data/fraction=0.5,1.5"], "out of range"),
    "one level": (lambda t: [exported(t), "--factor", "data/fraction=0.5"], "at least two levels"),
    "no seeds": (lambda t: [exported(t), "--factor", "data/fraction=0.5,1", "--seeds", "0"], "--seeds 0"),
    "baseline file missing": (lambda t: [str(t / "absent.yaml"), "--factor", "data/fraction=0.5,1"],
                              "does not exist"),
    "not a tune-export file": (lambda t: [str(t / "notes.yaml"), "--factor", "data/fraction=0.5,1"],
                               "is not a tune-export file"),
    "unknown experiment": (lambda t: ["no-such-search", "--factor", "data/fraction=0.5,1"],
                           "no experiment named 'no-such-search'"),
    "no factor": (lambda t: [exported(t)], "at least one --factor"),
    "factor with an ablation file": (lambda t: [os.path.join(ROOT, "ablations", "multitask_losses.py"),
                                                "--factor", "data/fraction=0.5,1"], "FACTORS"),
    "eval/test as a factor": (lambda t: [exported(t), "--factor", "eval/test=true,false"], "eval/test"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_ablation_input_is_one_clear_error_before_any_run(case, home, tmp_path, capsys, no_ray):
    (tmp_path / "notes.yaml").write_text("a: 1\n")
    build, needle = BAD[case]
    assert ablate_main(build(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(home / "ray") and not ray.is_initialized()


@pytest.fixture(scope="module")
def smoke(mlflow_server, tmp_path_factory):
    """One factor (data/fraction 0.5, and 1.0 = the baseline's own) on 2 seeds: 4 runs."""
    tmp = tmp_path_factory.mktemp("ablate")
    join_ray()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDTUNE_HOME", str(tmp / "home"))
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        out = io.StringIO()
        with pytest.MonkeyPatch.context() as stdout:
            stdout.setattr("sys.stdout", out)
            code = ablate_main([exported(tmp), "--factor", "data/fraction=0.5,1.0", "--seeds", "2", "--name",
                                "ablate-smoke"])
            resumed_out = io.StringIO()
            stdout.setattr("sys.stdout", resumed_out)
            resumed = ablate_main(["--name", "ablate-smoke", "--resume"])
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("ablate-smoke")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("medtune.role") == "parent")
    trials = [r for r in runs if r.data.tags.get("medtune.role") == "trial"]
    return {"code": code, "out": out.getvalue(), "resumed": resumed, "resumed_out": resumed_out.getvalue(),
            "client": client, "parent": parent, "trials": trials}


@pytest.mark.slow
def test_every_level_ran_on_every_seed_once_and_was_tested(smoke):
    assert smoke["code"] == 0, smoke["out"]
    assert smoke["parent"].data.tags["medtune.kind"] == "ablation"
    cells = sorted((t.data.tags[FACTOR_TAG], json.loads(t.data.tags[LEVEL_TAG]), int(t.data.tags[SEED_TAG]))
                   for t in smoke["trials"])
    # the level 1.0 is the baseline's own value: its runs are the baseline's, not trained twice
    assert cells == [("baseline", None, 0), ("baseline", None, 1), ("data/fraction", 0.5, 0), ("data/fraction", 0.5, 1)]
    for trial in smoke["trials"]:
        assert trial.info.status == "FINISHED"
        assert {"test/f1_macro", "val/f1_macro", "test/f1_macro_ci_low"} <= set(trial.data.metrics)
    seeds = {(t.data.tags[FACTOR_TAG], int(t.data.tags[SEED_TAG])): t.data.params["train/seed"] for t in smoke["trials"]}
    assert seeds[("baseline", 1)] == seeds[("data/fraction", 1)] == "1" and seeds[("baseline", 0)] == "0"


@pytest.mark.slow
def test_report_rows_recompute_from_the_runs_logged_values(smoke, tmp_path):
    client, parent = smoke["client"], smoke["parent"].info.run_id
    files = {f.path for f in client.list_artifacts(parent, "ablation")}
    assert {"ablation/ablation.md", "ablation/ablation.csv", "ablation/forest.html", "ablation/forest.png"} <= files
    with open(client.download_artifacts(parent, "ablation/ablation.csv", str(tmp_path))) as f:
        rows = list(csv.DictReader(f))
    final = {}
    for trial in smoke["trials"]:
        key = (trial.data.tags[FACTOR_TAG], json.loads(trial.data.tags[LEVEL_TAG]))
        for metric in ("test/f1_macro", "val/f1_macro"):
            history = client.get_metric_history(trial.info.run_id, metric)
            final.setdefault((*key, metric), []).append(max(history, key=lambda m: m.step).value)
    seen = set()
    for row in rows:
        if row["metric"] not in ("test/f1_macro", "val/f1_macro"):
            continue
        factor, level = row["factor"], float(row["level"]) if row["level"] else None
        runs = ("baseline", None) if row["baseline_runs"] == "True" else (factor, level)
        assert int(row["n"]) == 2
        assert float(row["mean"]) == pytest.approx(np.mean(final[(*runs, row["metric"])]), abs=1e-9)
        seen.add((factor, level, row["metric"]))
    assert {(f, l) for f, l, _ in seen} == {("baseline", None), ("data/fraction", 0.5), ("data/fraction", 1.0)}
    assert "Only 2 seed(s)" in smoke["out"] and "| data/fraction | 0.5 |" in smoke["out"]


@pytest.mark.slow
def test_resuming_a_finished_ablation_reports_it_again_without_training(smoke):
    assert smoke["resumed"] == 0
    assert "already ran its search" in smoke["resumed_out"] and "| data/fraction | 0.5 |" in smoke["resumed_out"]
    assert len(smoke["trials"]) == 4
