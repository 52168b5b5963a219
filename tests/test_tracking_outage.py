"""The MLflow server dies while a real Ray Tune experiment runs: trials go on, nothing is lost or doubled.

The module runs its own server (not the session's, which other tests use); a callback placed
before the tracker stops it with stop_server(), so the outage starts at a known result.
"""

import json
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path

import pytest
import ray
from mlflow import MlflowClient
from ray import tune
from ray.tune import Callback

from conftest import join_ray
from mlflow_server import write_queue
from mlflow_server.server import configure_client, ensure_server, stop_server
from mlflow_server.tracker import TrialTracker, get_or_create_parent_run

EPOCHS = 6
XS = (1, 2, 3)  # one trial per x; two run at once on the 2-CPU cluster, the third after
FAILING_X, FAIL_AT = 3, 4  # this trial raises in its 4th epoch, after 3 reported ones
KEYS = ("val/score", "val/loss")


def train(config: dict) -> None:
    """A pure-Python trainable: reports `epoch` and two metrics per epoch, after a short sleep."""
    for epoch in range(1, config["train"]["epochs"] + 1):
        time.sleep(config["sleep"])
        if config["x"] == FAILING_X and epoch == FAIL_AT:
            raise RuntimeError(f"planned failure in epoch {epoch}")
        tune.report({"epoch": epoch, "val/score": config["x"] * epoch, "val/loss": 1.0 / epoch})


def expected(x: int) -> tuple[str, set]:
    """Final status and every (key, step, value) point of the trial with this x."""
    last = FAIL_AT - 1 if x == FAILING_X else EPOCHS
    points = set()
    for step in range(1, last + 1):
        points |= {("val/score", step, float(x * step)), ("val/loss", step, 1.0 / step)}
    return ("FAILED" if x == FAILING_X else "FINISHED"), points


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    join_ray()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """This module's own MLflow server, which its tests stop and start: (home, port, uri)."""
    home = str(tmp_path_factory.mktemp("outage_home"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("MEDTUNE_MLFLOW_BACKEND", raising=False)
        patch.setattr(write_queue, "RETRY_S", 0.5)  # ask a down server again soon: a short test
        configure_client()
        yield home, port, ensure_server(home=home, port=port)
        stop_server(home=home)


def pending_dir(home: str) -> str:
    return str(Path(home, "mlflow", "pending"))


class Outage(Callback):
    """Stops the server at the `down_at`-th result, before the tracker sees it; with `up_at`,
    restarts it (same home and port) at that result, after `down_s` seconds of outage.

    After the restart it notes, at each later result, whether the tracker's pending file was
    already gone: the backlog then went out while the trials ran (on the queue's thread), not at the end.
    """

    def __init__(self, home: str, port: int, pending: str, down_at: int, up_at: int | None = None,
                 down_s: float = 3.0):  # fmt: skip
        self.home, self.port, self.pending = home, port, pending
        self.down_at, self.up_at, self.down_s = down_at, up_at, down_s
        self.results, self.drained_after = 0, []
        self.stopped_at = 0.0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results += 1
        if self.results == self.down_at:
            assert stop_server(home=self.home)
            self.stopped_at = time.monotonic()
        elif self.results == self.up_at:
            time.sleep(max(0.0, self.stopped_at + self.down_s - time.monotonic()))
            ensure_server(home=self.home, port=self.port)
        elif self.up_at and self.results > self.up_at:
            self.drained_after.append(not Path(self.pending).exists())


class TimedTracker(TrialTracker):
    """The tracker, timing its per-result hook: it must stay short while the server is down (it only
    queues; the queue's thread meets the server)."""

    slowest_s = 0.0

    def on_trial_result(self, *args, **kwargs):
        started = time.monotonic()
        super().on_trial_result(*args, **kwargs)
        self.slowest_s = max(self.slowest_s, time.monotonic() - started)


def run_experiment(tmp_path, uri: str, home: str, port: int, **outage) -> tuple[TimedTracker, Outage, str]:
    experiment = f"outage-{uuid.uuid4().hex[:8]}"
    ensure_server(home=home, port=port)  # up, whatever an earlier test left
    parent = get_or_create_parent_run(MlflowClient(uri), experiment, {})
    tracker = TimedTracker(uri, experiment, parent, {}, pending_dir(home), end_wait_s=2.0)
    cut = Outage(home, port, str(tracker.pending_path), **outage)
    tuner = tune.Tuner(
        tune.with_resources(train, {"cpu": 1}),
        param_space={"x": tune.grid_search(list(XS)), "sleep": 0.2, "train": {"epochs": EPOCHS}},
        tune_config=tune.TuneConfig(reuse_actors=True),  # the third trial takes a started worker
        run_config=tune.RunConfig(name=experiment, storage_path=str(tmp_path / "ray"), verbose=0,
                                  callbacks=[cut, tracker]),
    )  # fmt: skip
    results = tuner.fit()
    assert sorted(r.metrics.get("epoch") for r in results) == [FAIL_AT - 1, EPOCHS, EPOCHS]  # trials went on
    return tracker, cut, parent


def trial_runs(client: MlflowClient, parent: str) -> dict[int, object]:
    """The parent's trial runs by x, checking there is exactly one per trial id."""
    experiment_id = client.get_run(parent).info.experiment_id
    runs = client.search_runs([experiment_id], f"tags.`medtune.parent_run_id` = '{parent}'")
    trial_ids = [run.data.tags["medtune.trial_id"] for run in runs]
    assert len(trial_ids) == len(set(trial_ids)), trial_ids
    return {int(run.data.params["x"]): run for run in runs}


def logged_points(client: MlflowClient, run_id: str) -> list[tuple]:
    return [(k, m.step, m.value) for k in KEYS for m in client.get_metric_history(run_id, k)]


def assert_complete(client: MlflowClient, parent: str) -> int:
    """Every trial's run exists once, with each point exactly once and its final status; returns the points."""
    runs = trial_runs(client, parent)
    assert sorted(runs) == list(XS)
    total = 0
    for x, run in runs.items():
        status, points = expected(x)
        logged = logged_points(client, run.info.run_id)
        assert sorted(logged) == sorted(points), x  # each (key, step) once, with its value
        assert run.info.status == status
        assert run.data.params["train/epochs"] == str(EPOCHS)
        if status == "FAILED":
            assert "planned failure in epoch 4" in run.data.tags["medtune.error"]
            assert "error.txt" in [a.path for a in client.list_artifacts(run.info.run_id)]
        total += len(logged)
    return total


@pytest.mark.slow
def test_server_restarted_mid_run_loses_and_doubles_nothing(tmp_path, server, fault_log):
    home, port, uri = server
    tracker, cut, parent = run_experiment(tmp_path, uri, home, port, down_at=3, up_at=7)
    client = MlflowClient(uri)
    points = assert_complete(client, parent)
    assert tracker.pending_summary() is None and not tracker.pending_path.exists()
    assert any(cut.drained_after), "the backlog should go out while the trials run once the server is back"
    assert tracker.slowest_s < 1, tracker.slowest_s  # queued only: it never waits for the server
    fault_log(fault="MLflow server stopped mid-run, restarted on the same home and port >= 3 s later",
              outcome=f"trials went on; 3/3 runs, {points}/{points} metric points exactly once, statuses "
                      "right; backlog written on a later callback",
              trials=len(XS), points=points, slowest_callback_s=round(tracker.slowest_s, 2))


@pytest.mark.slow
def test_server_gone_until_the_end_leaves_an_exact_pending_file(tmp_path, server, fault_log):
    home, port, uri = server
    tracker, _, parent = run_experiment(tmp_path, uri, home, port, down_at=2)
    summary = tracker.pending_summary()
    pending = tracker.pending_path
    ops = [json.loads(line) for line in pending.read_text().splitlines()]
    queued = {(op["trial"], k, step, v) for op in ops if op["op"] == "metrics" for k, v, _, step in op["metrics"]}
    assert f"{len(ops)} MLflow writes" in summary and f"{len(queued)} metric points" in summary
    assert str(pending) in summary
    assert tracker.slowest_s < 1, tracker.slowest_s
    backup = tmp_path / "pending-copy.jsonl"
    shutil.copy(pending, backup)

    ensure_server(home=home, port=port)  # the server is back, before anyone replays
    client = MlflowClient(uri)
    on_server = {run.data.tags["medtune.trial_id"]: run for run in trial_runs(client, parent).values()}
    created = {op["trial"]: int(op["params"]["x"]) for op in ops if op["op"] == "create"}
    assert created and not created.keys() & on_server.keys()  # a trial started in the outage has no run
    x_of = {**{t: int(run.data.params["x"]) for t, run in on_server.items()}, **created}
    logged = {(t, *p) for t, run in on_server.items() for p in logged_points(client, run.info.run_id)}
    assert not logged & queued  # the file holds exactly what is missing, and all of it
    assert logged | queued == {(t, *p) for t, x in x_of.items() for p in expected(x)[1]}
    assert sorted(op["trial"] for op in ops if op["op"] == "end") == sorted(x_of)  # none ended in MLflow

    # tune-run --resume: Ray restores the tracker it pickled with the tuner, which replays the
    # file as the restored experiment (nothing left to run) starts.
    tune.Tuner.restore(str(tmp_path / "ray" / tracker.queue.experiment), trainable=train).fit()
    assert not pending.exists()
    points = assert_complete(client, parent)
    shutil.copy(backup, pending)  # replayed twice, as after a crash before the file was removed
    assert TrialTracker(uri, tracker.queue.experiment, parent, {}, pending_dir(home)).flush() == 0
    assert assert_complete(client, parent) == points
    fault_log(fault="MLflow server stopped mid-run and not back before the experiment ended",
              outcome=f"run ended normally; exactly the {len(ops)} missing writes ({len(queued)} points) "
                      f"in the pending file; Tuner.restore (tune-run --resume) replayed them, a second "
                      f"replay doubled nothing: {points}/{points} points once",
              trials=len(XS), pending_writes=len(ops), pending_points=len(queued), points=points)
