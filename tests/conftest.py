"""Shared fixtures: one real MLflow tracking server and one local Ray cluster for the whole test
session, and the faulty, crashed and resumed experiment two test files check."""

import os
import socket

import pytest

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # before Ray is imported: see search/__init__.py

from mlflow_server.server import ensure_server, stop_server


@pytest.fixture(scope="session")
def mlflow_home(tmp_path_factory) -> str:
    """The medtune home of the session's MLflow server (its files are in `<home>/mlflow/`)."""
    return str(tmp_path_factory.mktemp("medtune_home"))


@pytest.fixture(scope="session")
def mlflow_server(mlflow_home):
    """URI of a real MLflow server (SQLite + served artifacts) on a free port, stopped after."""
    with socket.socket() as sock:  # a free port, so a developer's server on 5000 is untouched
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        uri = ensure_server(home=mlflow_home, port=port)
    yield uri
    stop_server(home=mlflow_home)


@pytest.fixture
def tracking_uri(mlflow_server, monkeypatch) -> str:
    """`MLFLOW_TRACKING_URI` pointed at the session's server for one test."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    return mlflow_server


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A node cache (MEDTUNE_CACHE) of the test's own, never the home one."""
    path = tmp_path / "cache"
    monkeypatch.setenv("MEDTUNE_CACHE", str(path))
    return path


@pytest.fixture
def decodes(monkeypatch):
    """Every image or mask file the loader decodes, relative to its data root, in order."""
    from trainables.data import images as image_files

    seen = []
    read = image_files.read_image

    def recording(root, rel, image_rel):
        seen.append(rel)
        return read(root, rel, image_rel)

    monkeypatch.setattr(image_files, "read_image", recording)
    return seen


FAULT_LOG = "MEDTUNE_FAULT_LOG"


@pytest.fixture
def fault_log(request):
    """Record a fault the test tried and what came of it, for the README's table of faults.

    Call it as fault_log(fault="driver SIGKILL mid-trial", outcome="resumed; 4/4 trials", **counts).
    Rows go, one JSON object per line, to `$MEDTUNE_FAULT_LOG` when set (scripts/faults_table.py
    renders them); otherwise they are dropped.
    """
    import json

    def record(fault: str, outcome: str, **counts) -> None:
        path = os.environ.get(FAULT_LOG)
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"test": request.node.nodeid, "fault": fault, "outcome": outcome, **counts}) + "\n")

    return record


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory):
    """Address of a real local Ray cluster (one head node, 2 CPUs) shared by the whole session.

    Its processes run beside pytest, so a test connects as one more driver (a fraction of a
    second) instead of starting Ray (several seconds each time), and the engine can run an
    experiment on it the way `tune-run --address` does. Its workers share one MEDTUNE_CACHE of
    the session, never the home one. Tests that kill or restart Ray (driver kills, a node's
    death) start their own.
    """
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as patch:  # the node's processes inherit the environment
        patch.setenv("MEDTUNE_CACHE", str(tmp_path_factory.mktemp("ray_cache")))
        patch.delenv("RAY_ADDRESS", raising=False)
        cluster = Cluster(initialize_head=True, connect=False,
                          head_node_args={"num_cpus": 2, "include_dashboard": False})
    yield cluster.address
    cluster.shutdown()


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A local Ray cluster (2 CPUs) of this test process for one test module, for the modules that
    build their own Tuners; yields a folder for Ray Tune results. A module of its own: in a full
    run, Tuners of later modules on the session's cluster (ray_address) saw their trials' actors
    cancelled before they started, while the engine's runs on it (tests/test_end_to_end.py,
    tests/test_ablate.py) were unaffected."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield str(tmp_path_factory.mktemp("ray_results"))
    ray.shutdown()


@pytest.fixture(scope="session")
def faulty_and_resumed(tmp_path_factory, mlflow_server):
    """The one experiment tests/test_faults.py and tests/test_resume.py check: trial faults under a
    driver interrupted, killed three times and resumed each time (tests/faulty_experiment.py)."""
    from faulty_experiment import run

    return run(tmp_path_factory.mktemp("faulty"), mlflow_server)


# Spread over workers (`pytest -n 2`): each test module is one unit, so its module fixtures run once;
# modules that share a session experiment are one unit. Units start heaviest first, so that the long
# ones do not end up last on one worker while the other idles.
SHARED_UNITS = {"test_faults": "faulty_and_resumed", "test_resume": "faulty_and_resumed"}
HEAVIEST_FIRST = ["faulty_and_resumed", "test_spaces", "test_end_to_end", "test_console", "test_trainables", "test_ablate",
                  "test_tracking_outage", "test_tracking", "test_optuna_states", "test_cluster", "test_engine",
                  "test_postgres", "test_tracking_concurrency", "test_zeroshot"]


def unit(path: str) -> str:
    """The unit of work of a test file's path (or node id)."""
    stem = os.path.splitext(os.path.basename(path.split("::")[0]))[0]
    return SHARED_UNITS.get(stem, stem)


def pytest_collection_modifyitems(config, items):
    if hasattr(config, "workerinput"):  # a worker of `pytest -n N`: every worker sorts alike
        items.sort(key=lambda item: HEAVIEST_FIRST.index(u) if (u := unit(str(item.path))) in HEAVIEST_FIRST
                   else len(HEAVIEST_FIRST))  # stable: the order inside a unit stays


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit(nodeid)

    return ByUnit(config, log)
