"""Shared fixtures: one real MLflow tracking server and one local Ray cluster per test process, one
node cache for the session, the faulty, crashed and resumed experiment two test files check, the
smoke search and its re-training that tests/test_end_to_end.py checks and tests/test_browser.py
views, and the browser."""

import contextlib
import io
import os
import socket

import pytest

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # before Ray is imported: see search/__init__.py
# One torch thread per process, before torch is imported: two test workers already fill two cores, and on
# the tests' tiny tensors a second thread only spins (one tiny trial: 12.5 CPU-s with two, 6.4 with one,
# the same wall time). Ray's trial workers get their trial's CPUs from Ray.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from mlflow_server.server import ensure_server, stop_server


@pytest.fixture(scope="session", autouse=True)
def node_cache(tmp_path_factory):
    """MEDTUNE_CACHE for the session, unless the environment sets one: a node cache the test workers
    share (the cache is built for concurrent processes) and never the home one. Set before any Ray
    starts, so that the trial workers of the session's Ray (join_ray) use it too."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "node-cache"
    with pytest.MonkeyPatch.context() as patch:
        if not os.environ.get("MEDTUNE_CACHE"):
            patch.setenv("MEDTUNE_CACHE", str(folder))
        yield os.environ["MEDTUNE_CACHE"]


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


def join_ray() -> None:
    """Join this test process's local Ray cluster, starting it on first use; it runs until the session
    ends (pytest_sessionfinish) or a test stops it (stop_ray). The engine's experiments in this process
    use it as a notebook's Ray is used (search.engine.start_ray). Its workers inherit the environment
    of its start: the session's node cache, not a test's own MEDTUNE_CACHE.

    It has one CPU, so its trials run one at a time: a Tuner then starts one worker, and a fresh worker
    spends about 15 CPU-s importing torch, timm and Ray Tune, more than a tiny trial's training. The two
    test processes' trials still fill the two cores. Tests of trials side by side start Ray of their own
    (the faulty experiment's drivers, the console's search, the two-node cluster)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """This process's Ray (join_ray) for a module that builds its own Tuners: a folder for Ray Tune
    results."""
    join_ray()
    return str(tmp_path_factory.mktemp("ray_results"))


def stop_ray() -> None:
    """Stop this process's Ray, for a command that must start its own as from a shell; the next
    join_ray starts it again."""
    import ray

    ray.shutdown()


@pytest.fixture
def no_ray():
    """No Ray runs in this process when the test starts (stop_ray): for a check that a command
    started none."""
    stop_ray()


def pytest_sessionfinish(session, exitstatus):
    """Stop this process's Ray (join_ray), if it ran one."""
    import sys

    if "ray" in sys.modules:
        sys.modules["ray"].shutdown()


@pytest.fixture(scope="session")
def faulty_and_resumed(tmp_path_factory, mlflow_server):
    """The one experiment tests/test_faults.py and tests/test_resume.py check: trial faults under a
    driver interrupted, killed three times and resumed each time (tests/faulty_experiment.py)."""
    from faulty_experiment import run

    return run(tmp_path_factory.mktemp("faulty"), mlflow_server)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
E2E_SAMPLES = 4
# Smaller than SMOKE: these tests check the pipeline (the README's table of smoke studies shows that SMOKE learns).
E2E_TINY = ["--set", "data/image_size=32", "--set", "train/bn_reestimate_images=32"]


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


@pytest.fixture(scope="session")
def e2e(tmp_path_factory, mlflow_server):
    """`tune-run spaces/multitask.py --smoke-test --name e2e` (E2E_SAMPLES trials, E2E_TINY) on this process's
    Ray (join_ray) and the session's tracking server: its console output, client, parent and trial runs, env
    and folder."""
    from mlflow import MlflowClient

    from search.cli import run_main

    work = tmp_path_factory.mktemp("work")
    env = {"MEDTUNE_HOME": str(work / "runs"), "MLFLOW_TRACKING_URI": mlflow_server}
    join_ray()
    out = run_cli(run_main, os.path.join(ROOT, "spaces", "multitask.py"), "--smoke-test", *E2E_TINY,
                  "--name", "e2e", "--num-samples", str(E2E_SAMPLES), env=env, cwd=str(work))
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("e2e")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("medtune.role") == "parent"]
    trials = [r for r in runs if r.data.tags.get("medtune.role") == "trial"]
    return {"out": out, "client": client, "parents": parents, "trials": trials, "env": env, "work": work}


@pytest.fixture(scope="session")
def e2e_retrain(e2e):
    """tune-export of the e2e experiment, then tune-train of its best config (evaluated on test)."""
    import yaml

    from search.cli import export_main, train_main

    work, env = e2e["work"], e2e["env"]
    join_ray()
    run_cli(export_main, "e2e", "-o", "best.yaml", env=env, cwd=str(work))
    with open(work / "best.yaml") as f:
        doc = yaml.safe_load(f)
    out = run_cli(train_main, "best.yaml", "--name", "e2e-retrain", "--set", "eval/bootstrap=200",
                  env=env, cwd=str(work))
    client = e2e["client"]
    runs = client.search_runs([client.get_experiment_by_name("e2e-retrain").experiment_id],
                              "tags.`medtune.role` = 'trial'")
    return {"doc": doc, "out": out, "runs": runs}


CHROMIUM = "/usr/bin/chromium"  # Debian's package (.ci/run installs it); Playwright downloads no browser here
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser_page(tmp_path_factory):
    """A page of headless Chromium with an empty profile, driven by Playwright's sync API; the test
    is skipped when Debian's chromium is not installed."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium), as .ci/run does")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=90_000)  # a loaded CI machine renders MLflow's pages slowly
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1600, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(90_000)
        yield page
        context.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory, request):
    """The folder the browser tests keep their screenshots in: $MEDTUNE_TEST_ARTIFACTS/browser, else a
    temporary one; its path is printed at the end of the session."""
    from pathlib import Path

    base = os.environ.get("MEDTUNE_TEST_ARTIFACTS")
    folder = Path(base, "browser") if base else tmp_path_factory.mktemp("browser")
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter and any(folder.iterdir()):
        reporter.write_line(f"browser screenshots: {folder}")


# Spread over workers (`pytest -n 2`): each test module is one unit, so its module fixtures run once;
# modules that share a session experiment are one unit. Units start heaviest first, so that the long
# ones do not end up last on one worker while the other idles (but for the refusals: see REFUSALS).
SHARED_UNITS = {"test_faults": "faulty_and_resumed", "test_resume": "faulty_and_resumed",
                "test_end_to_end": "e2e", "test_browser": "e2e", "test_console": "e2e"}
HEAVIEST_FIRST = ["refusals", "e2e", "faulty_and_resumed", "test_trainables", "test_spaces", "test_ablate",
                  "test_tracking_outage", "test_cluster", "test_tracking", "test_zeroshot", "test_engine",
                  "test_postgres", "test_optuna_states", "test_figures", "test_tracking_concurrency", "test_moasha"]


# The tests that check a command started no Ray (the no_ray fixture stops this process's own): one unit,
# run first, so that no worker restarts its Ray after them.
REFUSALS = ("test_bad_input.py::", "test_ablate.py::test_bad_ablation_input")


def unit(nodeid: str) -> str:
    """The unit of work of a test's node id."""
    path, _, test = nodeid.partition("::")
    if f"{os.path.basename(path)}::{test}".startswith(REFUSALS):
        return "refusals"
    stem = os.path.splitext(os.path.basename(path))[0]
    return SHARED_UNITS.get(stem, stem)


def pytest_collection_modifyitems(config, items):
    if hasattr(config, "workerinput"):  # a worker of `pytest -n N`: every worker sorts alike
        items.sort(key=lambda item: HEAVIEST_FIRST.index(u) if (u := unit(item.nodeid)) in HEAVIEST_FIRST
                   else len(HEAVIEST_FIRST))  # stable: the order inside a unit stays


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit(nodeid)

    return ByUnit(config, log)
