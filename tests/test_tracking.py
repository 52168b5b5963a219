"""MLflow tracking against a real server: server lifecycle, parent/trial runs, Pareto front."""

import json
import logging
import math
import os
import pickle
import secrets
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from ray.train._internal import storage as ray_storage
from ray.train._internal.storage import StorageContext
from ray.tune.experiment import Trial

from mlflow_server.pareto import log_pareto, pareto_figure, pareto_table
from mlflow_server.selection import eligible, pareto_front
from mlflow_server.records import TrialRecord, collect_trials
from mlflow_server import server
from mlflow_server.server import CLIENT_ENV, configure_client, ensure_server, redact, stop_server
from mlflow_server.tracker import TrialTracker, get_or_create_parent_run

CONFIG = {"train": {"epochs": 3}, "optim": {"name": "adam", "lr": 0.001}, "model": {"arch": "unet"}}


@pytest.fixture(autouse=True, scope="module")
def client_settings():
    """The MLflow client settings of medtune's driver: a dead server fails within seconds."""
    configure_client()


@pytest.fixture
def pending_dir(tmp_path) -> Path:
    """Each test's own folder of pending writes, out of the working tree."""
    return tmp_path / "pending"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- server ------------------------------------------------------------------------------




def test_configure_client_keeps_the_users_settings_and_changes_nothing_when_called_again(monkeypatch):
    for key in CLIENT_ENV:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")  # the user's own choice
    configure_client()
    configured = dict(os.environ)
    configure_client()
    assert dict(os.environ) == configured
    assert {key: os.environ[key] for key in CLIENT_ENV} == {**CLIENT_ENV, "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}


def test_importing_the_tracking_modules_sets_no_environment():
    env = {key: value for key, value in os.environ.items() if key not in CLIENT_ENV}
    modules = "mlflow_server.server, mlflow_server.records, mlflow_server.write_queue, mlflow_server.tracker"
    code = f"import os, {modules}; print(sorted(set(os.environ) & {set(CLIENT_ENV)!r}))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr[-2000:]


def test_redact_hides_the_credentials_of_every_url_in_a_string():
    assert redact("postgresql://mlflow:s3cret@db:5432/runs") == "postgresql://***@db:5432/runs"
    assert redact("https://ghp_t0ken@github.com/org/repo.git") == "https://***@github.com/org/repo.git"
    assert redact("from http://a:b@h1/x to http://h2/y") == "from http://***@h1/x to http://h2/y"
    assert redact("user@example.org wrote /data/x@2x.png") == "user@example.org wrote /data/x@2x.png"
    assert redact("sqlite:///runs/mlflow/mlflow.db") == "sqlite:///runs/mlflow/mlflow.db"
    assert redact("/data/COVID-19_Radiography_Dataset") == "/data/COVID-19_Radiography_Dataset"
    assert redact(0.5) == 0.5 and redact(None) is None and redact(["a://u:p@h"]) == ["a://u:p@h"]


def test_configured_tracking_uri_is_used_unchanged(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server + "/")
    assert ensure_server(home=str(tmp_path)) == mlflow_server + "/"
    assert not (tmp_path / "mlflow").exists()


def test_unreachable_tracking_uri_is_a_prompt_error(tmp_path, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    monkeypatch.setattr(server, "REACH_TIMEOUT_S", 1.0)  # its wait is bounded; the bound's length is a setting
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=f"server at {dead} .*did not answer within 1 s"):
        ensure_server(home=str(tmp_path))
    with pytest.raises(RuntimeError, match=f"server at {dead} cannot be reached"):
        get_or_create_parent_run(MlflowClient(dead), "never-created", {})
    assert time.monotonic() - started < 30  # bounded, not the client's minutes of retries
    assert not (tmp_path / "mlflow").exists()  # nothing was launched


def test_running_server_is_reused(mlflow_server, mlflow_home, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    state = Path(mlflow_home, "mlflow")
    record = json.loads((state / "server.json").read_text())
    assert ensure_server(home=mlflow_home) == mlflow_server
    assert ensure_server(home=mlflow_home, port=record["port"]) == mlflow_server
    assert json.loads((state / "server.json").read_text()) == record
    assert (state / "server.log").read_text().count("Uvicorn running on") == 1
    assert (state / "mlflow.db").is_file()


def test_explicit_port_taken_by_another_process_is_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"Port {port} .* already in use"):
            ensure_server(home=str(tmp_path), port=port)
    assert not (tmp_path / "mlflow" / "server.json").exists()


def listening(port: int) -> set[str]:
    """IPv4 addresses with a TCP listener on `port` (Linux's /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
            found.add(socket.inet_ntoa(struct.pack("<I", int(address, 16))))
    return found


def test_server_binds_to_loopback_by_default(mlflow_server, mlflow_home, monkeypatch, caplog):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    record = json.loads(Path(mlflow_home, "mlflow", "server.json").read_text())
    assert record["host"] == "127.0.0.1" and record["auth"] is False
    assert listening(record["port"]) == {"127.0.0.1"}
    with caplog.at_level(logging.WARNING, logger="mlflow_server.server"):
        assert ensure_server(home=mlflow_home) == mlflow_server
    assert "without authentication" not in caplog.text


@pytest.mark.slow  # starts a server of its own
def test_server_on_another_host_without_auth_warns(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home, port = str(tmp_path), free_port()
    with caplog.at_level(logging.WARNING, logger="mlflow_server.server"):
        uri = ensure_server(home=home, port=port, host="0.0.0.0")
    try:
        assert uri == f"http://127.0.0.1:{port}"  # local clients still use loopback
        assert listening(port) == {"0.0.0.0"}
        assert f"listens on 0.0.0.0:{port} without authentication" in caplog.text
        assert "--auth" in caplog.text
        with pytest.raises(RuntimeError, match="already runs with host '0.0.0.0', not the requested '127.0.0.1'"):
            ensure_server(home=home, host="127.0.0.1")
    finally:
        stop_server(home=home)


@pytest.mark.slow  # starts a server of its own
def test_server_with_auth_refuses_anonymous_requests(tmp_path, monkeypatch, caplog):
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app needs Flask-WTF (mlflow[auth])")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    password = secrets.token_urlsafe(16)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "medtune-admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    home, port = str(tmp_path), free_port()
    with caplog.at_level(logging.WARNING, logger="mlflow_server.server"):
        uri = ensure_server(home=home, port=port, host="0.0.0.0", auth=True)
    try:
        assert "without authentication" not in caplog.text
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
        assert refused.value.code == 401
        client = MlflowClient(uri)  # sends $MLFLOW_TRACKING_USERNAME / _PASSWORD
        parent = get_or_create_parent_run(client, "secured", {})
        assert client.get_run(parent).data.tags["medtune.role"] == "parent"
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password + "-wrong")
        with pytest.raises(MlflowException, match="401"):
            MlflowClient(uri).get_run(parent)
        with pytest.raises(RuntimeError, match="already runs with auth on, not the requested off"):
            ensure_server(home=home, auth=False)
    finally:
        stop_server(home=home)


def test_auth_without_credentials_is_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with pytest.raises(RuntimeError, match="MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"):
        ensure_server(home=str(tmp_path), port=free_port(), host="0.0.0.0", auth=True)
    assert not (tmp_path / "mlflow" / "server.json").exists()


def test_stop_server_ends_the_recorded_process_group(tmp_path):
    state = tmp_path / "mlflow"
    state.mkdir()
    process = subprocess.Popen(["sleep", "60"], start_new_session=True)
    (state / "server.json").write_text(json.dumps({"pid": process.pid, "port": 1, "uri": "x"}))
    assert stop_server(home=str(tmp_path))
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)
    assert not (state / "server.json").exists()
    assert not stop_server(home=str(tmp_path))


# --- runs --------------------------------------------------------------------------------


@pytest.fixture
def client(mlflow_server) -> MlflowClient:
    return MlflowClient(mlflow_server)


@pytest.fixture
def experiment() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_trial(tmp_path, monkeypatch):
    """Real `ray.tune.experiment.Trial` objects; no Ray cluster is needed for them.

    Only their driver-side paths (`error_file`) ask the Ray session for its directory, so
    that lookup is pointed at `tmp_path`.
    """
    monkeypatch.setattr(ray_storage, "_get_ray_train_session_dir", lambda: str(tmp_path))

    def make(trial_id: str, config: dict = CONFIG, experiment_tag: str = "") -> Trial:
        storage = StorageContext(storage_path=str(tmp_path / "results"), experiment_dir_name="e")
        trial = Trial("train", config=config, trial_id=trial_id, storage=storage, stub=True,
                      experiment_tag=experiment_tag)
        trial.init_local_path()
        return trial

    return make


def report(tracker: TrialTracker, trial: Trial, epoch: int, **metrics) -> None:
    """Deliver one epoch's result the way Ray's controller does (callback, then last_result)."""
    result = {
        "epoch": epoch,
        "training_iteration": epoch,
        "time_this_iter_s": 0.5,
        "trial_id": trial.trial_id,
        "config": trial.config,
        **metrics,
    }
    tracker.on_trial_result(iteration=epoch, trials=[trial], trial=trial, result=result)
    trial.update_last_result(result)


def trial_runs(client: MlflowClient, parent_run_id: str) -> list:
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'")


def test_parent_run_is_created_once_and_found_again(client, experiment):
    parent = get_or_create_parent_run(client, experiment, {"medtune.space": "spaces/x.py"})
    client.set_terminated(parent)
    assert get_or_create_parent_run(client, experiment, {}) == parent
    run = client.get_run(parent)
    assert run.info.status == "RUNNING"
    assert run.info.run_name == experiment
    assert run.data.tags["medtune.role"] == "parent"
    assert run.data.tags["medtune.space"] == "spaces/x.py"
    found = client.get_experiment_by_name(experiment)
    assert len(client.search_runs([found.experiment_id])) == 1
    assert found.tags["medtune.kind"] == "search"  # the experiment list tells the kinds apart
    assert found.tags["mlflow.note.content"] == "Search of a trainable"


def test_retrainings_and_ablations_are_told_apart_from_searches(client, experiment):
    tags = {"medtune.trainable": "multitask"}
    for kind, more, description in [
        ("search", {"medtune.space_file": "spaces/multitask.py"}, "Search of multitask over spaces/multitask.py"),
        ("retrain", {"medtune.kind": "retrain", "medtune.retrain_of": "abc"},
         "Re-training of multitask (the config of trial run abc)"),
        ("ablation", {"medtune.kind": "ablation"}, "Ablation of multitask"),
    ]:
        get_or_create_parent_run(client, f"{experiment}-{kind}", {**tags, **more})
        found = client.get_experiment_by_name(f"{experiment}-{kind}")
        assert found.tags["medtune.kind"] == kind
        assert found.tags["mlflow.note.content"] == description
        assert found.tags["mlflow.experimentKind"] == "custom_model_development"


def test_tracker_logs_nested_runs_with_statuses(client, experiment, make_trial, mlflow_server, pending_dir):
    parent = get_or_create_parent_run(client, experiment, {})
    tracker = TrialTracker(mlflow_server, experiment, parent, {"medtune.git": "abc123"}, str(pending_dir))
    done, stopped, broken = make_trial("t_00000", experiment_tag="3_model/arch=unet"), make_trial("t_00001"), \
        make_trial("t_00002")

    tracker.on_trial_start(iteration=0, trials=[], trial=done)
    for epoch, f1 in enumerate([0.5, 0.6, 0.7], start=1):
        loss = math.nan if epoch == 2 else 1.0 / epoch
        report(tracker, done, epoch, **{"val/f1_macro": f1, "val/loss": loss, "flag/ok": True,
                                        "machine/host": "node-a", "machine/cpu": "CPU A"})
    tracker.on_trial_start(iteration=4, trials=[], trial=done)  # e.g. restarted by Ray, on another node
    matrix = {"classes": ["Normal", "COVID"], "matrix": [[2, 0], [1, 3]], "rows": "true", "columns": "predicted"}
    report(tracker, done, 3, **{"val/confusion_matrix": matrix, "val/accuracy": 0.8, "machine/host": "node-b",
                                "machine/cpu": "CPU A"})
    tracker.on_trial_complete(iteration=5, trials=[], trial=done)

    tracker.on_trial_start(iteration=0, trials=[], trial=stopped)
    report(tracker, stopped, 1, **{"val/f1_macro": 0.1})
    tracker.on_trial_complete(iteration=1, trials=[], trial=stopped)  # ASHA stopped it

    tracker.on_trial_start(iteration=0, trials=[], trial=broken)
    broken.handle_error(RuntimeError("Traceback (most recent call last):\nValueError: loss is nan"))
    tracker.on_trial_error(iteration=1, trials=[], trial=broken)
    tracker.on_experiment_end(trials=[])  # the writes go out on the queue's thread; Ray ends with this

    runs = {run.data.tags["medtune.trial_id"]: run for run in trial_runs(client, parent)}
    assert sorted(runs) == ["t_00000", "t_00001", "t_00002"]
    run = runs["t_00000"]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "t03 unet lr=1e-3"  # Ray's trial counter, the model, the learning rate
    assert runs["t_00001"].info.run_name == "t_00001 unet lr=1e-3"  # no counter: the trial id
    assert run.data.tags["medtune.role"] == "trial"
    assert run.data.tags["medtune.parent_run_id"] == parent
    assert run.data.tags["medtune.git"] == "abc123"
    assert {k: v for k, v in run.data.tags.items() if k.startswith(("machine/", "val/"))} == \
        {"machine/host": "node-b", "machine/cpu": "CPU A"}  # the machine of its latest epochs; no other string
    assert run.data.params == {
        "train/epochs": "3", "optim/name": "adam", "optim/lr": "0.001", "model/arch": "unet"
    }  # fmt: skip
    history = client.get_metric_history(run.info.run_id, "val/f1_macro")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.6), (3, 0.7)]
    assert math.isnan(client.get_metric_history(run.info.run_id, "val/loss")[1].value)
    assert "time_this_iter_s" not in run.data.metrics and "flag/ok" not in run.data.metrics
    path = Path(client.download_artifacts(run.info.run_id, "confusion_matrix.json"))
    assert json.loads(path.read_text()) == matrix  # the class names travel with the counts
    assert not any(key.startswith("val/confusion_matrix") for key in run.data.metrics)

    assert runs["t_00001"].info.status == "KILLED"
    failed = runs["t_00002"]
    assert failed.info.status == "FAILED"
    assert failed.data.tags["medtune.error"] == "ValueError: loss is nan"
    assert "error.txt" in [a.path for a in client.list_artifacts(failed.info.run_id)]
    assert tracker.pending_summary() is None and not tracker.pending_path.exists()


def test_hooks_return_at_once_and_the_queues_thread_writes_everything_in_order(
    client, experiment, make_trial, mlflow_server, pending_dir
):
    parent = get_or_create_parent_run(client, experiment, {})
    tracker = TrialTracker(mlflow_server, experiment, parent, {}, str(pending_dir))
    trials = [make_trial(f"t_0000{i}") for i in range(2)]
    for trial in trials:
        tracker.on_trial_start(iteration=0, trials=[], trial=trial)
    for epoch in range(1, 26):  # two trials' results interleaved, as Ray delivers them
        for i, trial in enumerate(trials):
            report(tracker, trial, epoch, **{"val/f1_macro": epoch / 100 + i})
    # the hooks returned before the server had the writes, which wait saved in the pending file
    assert tracker.pending_path.exists()
    for trial in trials:
        tracker.on_trial_complete(iteration=25, trials=[], trial=trial)
    tracker.on_experiment_end(trials=[])
    assert tracker.pending_summary() is None and not tracker.pending_path.exists()
    assert tracker.queue._writer is None  # the thread ended with the experiment

    runs = {run.data.tags["medtune.trial_id"]: run for run in trial_runs(client, parent)}
    assert sorted(runs) == ["t_00000", "t_00001"]
    for i, trial in enumerate(trials):
        run = runs[trial.trial_id]
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "val/f1_macro")
        assert [(m.step, m.value) for m in history] == [(e, e / 100 + i) for e in range(1, 26)]


def test_resumed_trial_continues_its_run(client, experiment, make_trial, mlflow_server, pending_dir):
    parent = get_or_create_parent_run(client, experiment, {})
    trial = make_trial("t_00000")
    tracker = TrialTracker(mlflow_server, experiment, parent, {}, str(pending_dir))
    tracker.on_trial_start(iteration=0, trials=[], trial=trial)
    report(tracker, trial, 1, **{"val/f1_macro": 0.4})
    assert tracker.flush() == 0  # written, before the driver dies below
    restored = pickle.loads(pickle.dumps(tracker))  # Ray checkpoints callbacks by pickling
    assert restored.queue._client is None

    # The driver dies (the run stays RUNNING); a new driver resumes with a fresh tracker.
    assert get_or_create_parent_run(client, experiment, {}) == parent
    resumed = TrialTracker(mlflow_server, experiment, parent, {}, str(pending_dir))
    resumed.on_trial_start(iteration=0, trials=[], trial=trial)
    for epoch in (2, 3):
        report(resumed, trial, epoch, **{"val/f1_macro": 0.4 + epoch / 10})
    resumed.on_trial_complete(iteration=3, trials=[], trial=trial)
    resumed.on_experiment_end(trials=[])

    (run,) = trial_runs(client, parent)
    assert run.info.run_id == restored.queue._runs["t_00000"]
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "val/f1_macro")
    assert [m.step for m in history] == [1, 2, 3]


def test_writes_to_an_unreachable_server_wait_in_a_file_the_next_tracker_replays(
    client, experiment, make_trial, mlflow_server, pending_dir, caplog
):
    parent = get_or_create_parent_run(client, experiment, {})
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: every write fails
    offline = TrialTracker(dead, experiment, parent, {"medtune.git": "abc123"}, str(pending_dir))
    trial = make_trial("t_00000")
    started = time.monotonic()
    offline.on_trial_start(iteration=0, trials=[], trial=trial)  # raises nothing into Ray
    for epoch in (1, 2, 3):
        report(offline, trial, epoch, **{"val/f1_macro": epoch / 10, "val/loss": 1 / epoch})
    offline.on_trial_complete(iteration=3, trials=[], trial=trial)
    assert time.monotonic() - started < 1  # queued: the queue's own thread meets the dead server
    assert offline.flush() == 6  # tried now, in this thread: one bounded failure
    offline.queue.close()  # as at the experiment's end: its thread stops asking
    assert time.monotonic() - started < 20
    assert trial_runs(client, parent) == []
    summary = offline.pending_summary()
    assert "6 MLflow writes" in summary and "6 metric points" in summary and dead in summary
    assert offline.pending_path == pending_dir / f"{parent}.jsonl"
    assert str(offline.pending_path) in summary and "server at " + dead in caplog.text
    restored = pickle.loads(pickle.dumps(offline))  # as Ray keeps it: without the queue ...
    assert restored.queue._ops == deque() and restored.pending_summary() == summary  # ... which the file holds
    with offline.pending_path.open("a") as file:
        file.write('{"op": "metrics", "trial": "t_00000", "metr')  # a driver killed mid-line

    replay = TrialTracker(mlflow_server, experiment, parent, {"medtune.git": "abc123"}, str(pending_dir))
    assert replay.flush() == 0 and not offline.pending_path.exists()
    assert "Skipping a damaged line" in caplog.text
    (run,) = trial_runs(client, parent)
    assert run.info.status == "FINISHED" and run.data.tags["medtune.git"] == "abc123"
    assert run.data.params["optim/lr"] == "0.001"
    history = client.get_metric_history(run.info.run_id, "val/f1_macro")
    assert [(m.step, m.value) for m in history] == [(1, 0.1), (2, 0.2), (3, 0.3)]


def test_collect_trials_reads_typed_configs(client, experiment, make_trial, mlflow_server, pending_dir):
    parent = get_or_create_parent_run(client, experiment, {})
    tracker = TrialTracker(mlflow_server, experiment, parent, {}, str(pending_dir))
    for trial_id, epochs in (("t_00000", 3), ("t_00001", 1)):
        trial = make_trial(trial_id)
        tracker.on_trial_start(iteration=0, trials=[], trial=trial)
        for epoch in range(1, epochs + 1):
            report(tracker, trial, epoch, **{"val/f1_macro": epoch / 10})
        tracker.on_trial_complete(iteration=epochs, trials=[], trial=trial)
    tracker.on_experiment_end(trials=[])

    records = collect_trials(client, parent)
    assert [(r.trial_id, r.status) for r in records] == [("t_00000", "FINISHED"), ("t_00001", "KILLED")]
    assert records[0].config == {
        "train/epochs": 3, "optim/name": "adam", "optim/lr": 0.001, "model/arch": "unet"
    }  # fmt: skip
    assert records[0].metrics == {"val/f1_macro": 0.3}
    assert [r.trial_id for r in eligible(records, {"val/f1_macro": "max"})] == ["t_00000"]


# --- Pareto ------------------------------------------------------------------------------

MAX2 = {"f1": "max", "speed": "max"}


def record(trial_id: str, status: str = "FINISHED", **metrics) -> TrialRecord:
    config = {"model/arch": trial_id[-1], "train/epochs": 3}
    return TrialRecord(f"run-{trial_id}", trial_id, status, config, metrics)


def test_pareto_figure_highlights_the_front_along_x():
    records = [record("a", f1=0.9, speed=10, mem=1.0), record("b", f1=0.8, speed=20, mem=2.0)]
    records.append(record("c", f1=0.7, speed=15, mem=3.0))
    dominated, front = pareto_figure(records, {**MAX2, "mem": "min"}, [records[1], records[0]]).data
    assert list(front.x) == [10, 20] and list(front.y) == [0.9, 0.8]
    assert list(dominated.x) == [15]
    assert dominated.hovertext[0].split("<br>") == [
        "<b>c</b>", "f1 = 0.7", "speed = 15", "mem = 3", "model/arch = c"
    ]  # fmt: skip  (the searched keys only: train/epochs is the same in every trial)
    _, single = pareto_figure(records, {"f1": "max"}, records[:1]).data
    assert list(single.x) == [0] and list(single.text) == ["a"]  # start order, labelled


def test_pareto_table_shows_only_varying_config_keys():
    records = [record("a", f1=0.8, speed=20), record("b", f1=0.9, speed=10)]
    lines = pareto_table(pareto_front(records, MAX2), MAX2).splitlines()
    assert lines[0].split() == ["trial_id", "f1", "speed", "model/arch"]
    assert [line.split()[0] for line in lines[2:]] == ["b", "a"]  # best f1 first
    assert len({len(line) for line in lines[:2]}) == 1  # fixed width


def test_log_pareto_logs_only_finished_non_dominated_trials(client, experiment):
    parent = get_or_create_parent_run(client, experiment, {})
    records = [
        record("a", f1=0.9, speed=10, extra=math.nan),
        record("b", f1=0.8, speed=20),
        record("c", f1=0.7, speed=15),
        record("d", "FAILED", f1=1.0, speed=100),
        record("e", "KILLED", f1=0.95, speed=50),
    ]
    front = log_pareto(client, parent, records, MAX2)
    assert [r.trial_id for r in front] == ["a", "b"]
    names = {a.path: a.file_size for a in client.list_artifacts(parent)}
    assert names["pareto.html"] > 1_000_000  # plotly.js embedded, not fetched from a CDN
    path = client.download_artifacts(parent, "pareto.json")
    summary = json.loads(Path(path).read_text(), parse_constant=pytest.fail)  # strict JSON
    assert summary["objectives"] == MAX2
    assert [m["trial_id"] for m in summary["front"]] == ["a", "b"]
    assert summary["front"][0]["metrics"] == {"f1": 0.9, "speed": 10, "extra": None}
    assert summary["front"][1]["config"] == {"model/arch": "b", "train/epochs": 3}
