"""What a user reads and gets back: the start-up lines before the first trial, a finished search given
more trials with --resume --num-samples, a tune-train that reads like tune-run and leaves a model in
its MLflow run, and the home found from any folder of a project (tune-ui, tune-ui --stop)."""
import json
import os
import re
import subprocess

import optuna
import pytest
import ray
import torch
from mlflow import MlflowClient

from conftest import join_ray, run_cli, stop_ray
from search.cli import run_main, ui_main
from search.export import load_model
from search.home import ExperimentState, results_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--smoke-test", "--set", "data/image_size=32", "--set", "train/epochs=1", "--set", "figures/draw=false",
        "--scheduler", "fifo"]


def test_the_home_is_found_from_any_folder_of_a_project(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDTUNE_HOME", raising=False)
    project = tmp_path / "project"
    (project / "notebooks" / "deep").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'study'\n")
    monkeypatch.chdir(project / "notebooks" / "deep")
    assert results_dir() == str(project / "runs")  # as from the project's root
    (project / "notebooks" / "runs" / "mlflow").mkdir(parents=True)  # a home nearer than the project's root
    assert results_dir() == str(project / "notebooks" / "runs")
    monkeypatch.chdir(tmp_path)  # outside any project: ./runs
    assert results_dir() == str(tmp_path / "runs")
    monkeypatch.setenv("MEDTUNE_HOME", str(tmp_path / "elsewhere"))
    assert results_dir() == str(tmp_path / "elsewhere")


def test_tune_ui_stop_says_which_server_it_stopped(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MEDTUNE_HOME", raising=False)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'study'\n")
    (tmp_path / "runs" / "mlflow").mkdir(parents=True)
    (tmp_path / "src").mkdir()
    server = subprocess.Popen(["sleep", "60"], start_new_session=True)  # stands for the recorded server
    (tmp_path / "runs" / "mlflow" / "server.json").write_text(
        json.dumps({"pid": server.pid, "port": 5999, "uri": "http://127.0.0.1:5999"}))
    monkeypatch.chdir(tmp_path / "src")
    assert ui_main(["--stop"]) == 0
    assert capsys.readouterr().out.strip() == (f"Stopped the MLflow server at http://127.0.0.1:5999 (pid {server.pid}) "
                                               f"of the home {tmp_path / 'runs'}")
    assert server.wait(timeout=10) is not None
    assert ui_main(["--stop"]) == 0
    assert capsys.readouterr().out.strip() == f"No MLflow server of the home {tmp_path / 'runs'} was running."


@pytest.fixture(scope="module")
def extended(tmp_path_factory, mlflow_server):
    """A 2-trial search (tiny classification) run as from a shell, then --resume --num-samples 3 on this
    process's Ray (join_ray): each command's console output."""
    work = tmp_path_factory.mktemp("console")
    env = {"MEDTUNE_HOME": str(work / "runs"), "MEDTUNE_CACHE": str(work / "cache"),
           "MLFLOW_TRACKING_URI": mlflow_server}
    stop_ray()  # the start-up lines are those of a command run from a shell, which starts its own Ray
    space = os.path.join(ROOT, "spaces", "classification.py")
    first = run_cli(run_main, space, *TINY, "--name", "console", "--num-samples", "2", env=env, cwd=str(work))
    ray_left = ray.is_initialized()  # the Ray tune-run started, shut down beside its summary
    join_ray()
    more = run_cli(run_main, space, "--name", "console", "--resume", "--num-samples", "3", env=env, cwd=str(work))
    return {"first": first, "more": more, "env": env, "work": work, "client": MlflowClient(mlflow_server),
            "ray_left": ray_left}


@pytest.mark.slow
def test_the_start_says_what_it_is_doing_one_line_each(extended):
    lines = extended["first"].splitlines()
    experiment = next(i for i, line in enumerate(lines) if line.startswith("Experiment 'console'"))
    before = lines[:experiment]
    assert re.fullmatch(r"Checks: \d+ configs of classification \(models and weights, .*\)", before[0])  # the first line
    assert any(line.startswith("Data: generating the synthetic covid_radiography set in") for line in before)
    assert any(re.match(r"Data: decoding \d+ images of .* at 32 px into the node cache", line) for line in before)
    assert any(line.startswith("Tracking: the MLflow server at http://") for line in before)
    assert any(line.startswith("Ray: starting a local cluster over ") for line in before)  # beside the tracking server
    assert "started" in lines[experiment + 1]  # nothing else before the first trial starts
    assert not extended["ray_left"] and "\nBest: " in extended["first"]  # Ray stopped, the summary made
    again = extended["more"].splitlines()  # the data decoded once, then read from the node cache
    assert any(re.match(r"Data: \d+ images of .* decoded at 32 px, from the node cache", line) for line in again)
    assert not any(line.startswith("Data: decoding") for line in again)


@pytest.mark.slow
def test_resume_with_more_samples_continues_the_finished_search(extended):
    out, client = extended["more"], extended["client"]
    assert "Experiment 'console': 3 trials (2 made, 1 more)" in out and "already ran its search" not in out
    assert "Trials: 3 of 3:" in out
    experiment = client.get_experiment_by_name("console")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("medtune.role") == "parent"]
    trials = [r for r in runs if r.data.tags.get("medtune.role") == "trial"]
    assert len(parents) == 1 and len(trials) == 3
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parents[0].info.run_id}
    storage = ExperimentState(extended["env"]["MEDTUNE_HOME"], "console").optuna_storage
    study = optuna.load_study(study_name="console", storage=storage)  # one study, its sampler saw the first two
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)


@pytest.mark.slow
def test_resume_asking_fewer_trials_than_made_is_a_clear_error(extended, capsys, monkeypatch):
    for key, value in extended["env"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(extended["work"])
    assert run_main(["spaces/classification.py", "--name", "console", "--resume", "--num-samples", "2"]) == 2
    assert "Experiment 'console' has made 3 trials; ask for 3 or more, not 2." in capsys.readouterr().err


@pytest.mark.slow
def test_tune_train_reads_like_tune_run_and_logs_a_loadable_model(e2e, e2e_retrain, tmp_path):
    out, client = e2e_retrain["out"], e2e["client"]
    assert "== Status ==" not in out and "\x1b[" not in out
    assert re.search(r"^\[ *\d+:\d\d\] 1/1 trials: .* started$", out, re.M)  # the live view of tune-run
    table = out[out.index("Final metrics:"):].splitlines()
    assert re.match(r"\s+metric\s+validation\s+test \[95% interval\]$", table[1])
    assert re.search(r"^\s+f1_macro\s+[\d.]+\s+[\d.]+ \[[\d.]+, [\d.]+\]$", out, re.M)
    url = re.search(r"^Model: (http://\S+/#/experiments/\d+/runs/(\w+))$", out, re.M)
    assert url, out
    run_id = url.group(2)
    assert client.get_run(run_id).data.tags["medtune.role"] == "trial"
    artifacts = {a.path for a in client.list_artifacts(run_id, "model")} | \
        {a.path for a in client.list_artifacts(run_id, "export")}
    assert {"model/weights.pt", "model/config.json", "export/best.yaml"} <= artifacts
    model, config = load_model(client.download_artifacts(run_id, "model", str(tmp_path)))
    assert config["eval/test"] is True and config["model/encoder"] == "tu-test_resnet"
    with torch.no_grad():
        masks, logits = model(torch.zeros(2, config["data/channels"], config["data/image_size"],
                                          config["data/image_size"]))  # the multitask model: masks and classes
    assert masks.shape == (2, 1, config["data/image_size"], config["data/image_size"])
    assert logits.shape == (2, 4)  # the synthetic set's four classes

