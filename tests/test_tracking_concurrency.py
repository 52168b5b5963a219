"""Concurrent writers against the default SQLite-backed server: no lock errors, no lost points.

`load_server` is shared with tests/test_postgres.py, which runs the same load against a
PostgreSQL-backed server.
"""

import json
import multiprocessing
import os
import socket
import time
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlflow_server.server import ensure_server, stop_server

WRITERS = 8
STEPS = 10  # writes per writer: 2 x STEPS + 4 requests, all of them at once across writers
BATCH_KEYS = ("load/a", "load/b", "load/c", "load/d")  # sent together through log_batch
SINGLE_KEY = "load/e"  # sent one point at a time through log_metric
LOCK_ERRORS = ("database is locked", "deadlock detected", "could not serialize")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def value(writer: int, key: str, step: int) -> float:
    keys = (*BATCH_KEYS, SINGLE_KEY)
    return writer * 1000 + step + keys.index(key) / 10


def write_run(uri: str, experiment_id: str, writer: int, barrier, errors) -> None:
    """One writer process: a run with params, tags and STEPS x 5 metric points, no client retries."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # an error must surface, not be retried away
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(uri)
    barrier.wait(timeout=120)  # every writer is imported and ready: start together
    try:
        run_id = client.create_run(experiment_id, run_name=f"writer-{writer}").info.run_id
        client.log_batch(run_id, params=[Param("writer", str(writer)), Param("steps", str(STEPS))],
                         tags=[RunTag("medtune.load", "concurrency")])
        client.set_tag(run_id, "writer", str(writer))
        for step in range(STEPS):
            now = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(k, value(writer, k, step), now, step) for k in BATCH_KEYS])
            client.log_metric(run_id, SINGLE_KEY, value(writer, SINGLE_KEY, step), step=step)
        client.set_terminated(run_id)
    except Exception as exc:  # reported to the parent, which fails the test with the message
        errors.put(f"writer {writer}: {type(exc).__name__}: {exc}")
        raise


def hammer(uri: str, experiment: str) -> str:
    """Run WRITERS writer processes at once against `uri`; return the experiment id."""
    experiment_id = MlflowClient(uri).create_experiment(experiment)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["mlflow.tracking", "mlflow.entities"])  # imported once, not per writer
    barrier, errors = context.Barrier(WRITERS), context.Queue()
    writers = [
        context.Process(target=write_run, args=(uri, experiment_id, i, barrier, errors)) for i in range(WRITERS)
    ]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=180)
    messages = []
    while not errors.empty():
        messages.append(errors.get())
    assert not messages, "\n".join(messages)
    assert [p.exitcode for p in writers] == [0] * WRITERS
    return experiment_id


def assert_every_point(uri: str, experiment_id: str) -> int:
    """Every writer's run is there once, FINISHED, with all its params, tags and points; returns the count."""
    client = MlflowClient(uri)
    runs = client.search_runs([experiment_id], max_results=100)
    assert sorted(run.info.run_name for run in runs) == sorted(f"writer-{i}" for i in range(WRITERS))
    points = 0
    for run in runs:
        writer = int(run.data.params["writer"])
        assert run.info.status == "FINISHED"
        assert run.data.tags["writer"] == str(writer) and run.data.tags["medtune.load"] == "concurrency"
        for key in (*BATCH_KEYS, SINGLE_KEY):
            history = client.get_metric_history(run.info.run_id, key)
            assert sorted((m.step, m.value) for m in history) == [
                (step, value(writer, key, step)) for step in range(STEPS)
            ], (writer, key)
            points += len(history)
    return points


def assert_no_lock_errors(log: Path) -> None:
    text = log.read_text(errors="replace").lower()
    assert not [error for error in LOCK_ERRORS if error in text], text[-3000:]


def load_server(home: Path, store: str, fault_log) -> tuple[dict, str, int]:
    """Start a server in `home` (its backend store from the environment), run `hammer` against it,
    check every point and the server log, log the fault; return (server record, experiment id, points)."""
    uri = ensure_server(home=str(home), port=free_port())
    try:
        record = json.loads((home / "mlflow" / "server.json").read_text())
        started = time.monotonic()
        experiment_id = hammer(uri, f"load-{uuid.uuid4().hex[:8]}")
        elapsed = time.monotonic() - started
        points = assert_every_point(uri, experiment_id)
    finally:
        stop_server(home=str(home))
    assert points == WRITERS * STEPS * (len(BATCH_KEYS) + 1)
    assert_no_lock_errors(home / "mlflow" / "server.log")
    fault_log(fault=f"{WRITERS} concurrent writer processes, {store}-backed server",
              outcome=f"no lock errors; {points}/{points} metric points read back", writers=WRITERS,
              points=points, seconds=round(elapsed, 1))
    return record, experiment_id, points


@pytest.mark.slow
def test_concurrent_writers_on_sqlite_lose_nothing(tmp_path, monkeypatch, fault_log):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MEDTUNE_MLFLOW_BACKEND", raising=False)
    record, _, _ = load_server(tmp_path, "SQLite", fault_log)
    assert record["backend"] == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
