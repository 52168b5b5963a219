"""A two-node Ray cluster (head + one worker node, one CPU each, on this machine): the engine
spreads trials over both nodes; the worker node is killed mid-trial and the experiment still
completes, every trial accounted for once, the trial that was on the dead node resumed on the
head node from its checkpoint."""
import contextlib
import io
import os
import threading
import time

import optuna
import pytest
from mlflow import MlflowClient
from ray.cluster_utils import Cluster

from conftest import stop_ray
from search.cli import run_main
from search.home import ExperimentState
from trials import engine_trainables, entries, recorded

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME, SAMPLES, EPOCHS = "two-nodes", 2, 3  # one trial per node
# Both nodes notice a dead peer within seconds rather than Ray's default half a minute.
FAST_HEALTH_CHECKS = {"health_check_period_ms": 500, "health_check_timeout_ms": 500,
                      "health_check_failure_threshold": 3}
pytestmark = pytest.mark.slow  # each test reads the one two-node experiment


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory, mlflow_server):
    work = tmp_path_factory.mktemp("cluster")
    log = str(work / "reports.jsonl")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        patch.setenv("MEDTUNE_CACHE", str(work / "cache"))  # each node's processes inherit it
        patch.setenv("MEDTUNE_HOME", str(work / "runs"))
        engine_trainables(patch, lambda trainable: recorded(trainable, log))
        stop_ray()  # tune-run --address joins the cluster below, not this process's own Ray
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "include_dashboard": False, "_system_config": FAST_HEALTH_CHECKS})
        worker = cluster.add_node(num_cpus=1, include_dashboard=False)
        cluster.wait_for_nodes()
        head_id, worker_id = cluster.head_node.node_id, worker.node_id
        killed: dict = {}
        done = threading.Event()

        def kill_worker_node_mid_trial():
            """Remove the worker node abruptly once a trial on it has reported an epoch but not its last."""
            while not done.is_set():
                on_worker = [e for e in entries(log) if e["node"] == worker_id and e["event"] == "report"]
                last = {e["trial"]: e["epoch"] for e in on_worker}
                midway = {t: n for t, n in last.items() if n < EPOCHS}
                if midway:
                    cluster.remove_node(worker, allow_graceful=False)
                    killed.update(trials=midway, at=time.monotonic())
                    return
                time.sleep(0.1)

        killer = threading.Thread(target=kill_worker_node_mid_trial, daemon=True)
        killer.start()
        args = [os.path.join(ROOT, "spaces", "classification.py"), "--smoke-test", "--name", NAME,
                "--num-samples", str(SAMPLES), "--scheduler", "fifo", "--max-failures", "1",
                "--set", "data/image_size=32", "--set", f"train/epochs={EPOCHS}",
                "--set", "train/bn_reestimate_images=32", "--set", "figures/draw=false",
                "--set", "train/checkpoint_s=0", "--address", cluster.address]
        console = io.StringIO()
        started = time.monotonic()
        try:
            with contextlib.redirect_stdout(console):
                code = run_main(args)
        finally:
            done.set()
            killer.join(10)
            cluster.shutdown()
        client = MlflowClient(mlflow_server)
        runs = client.search_runs([client.get_experiment_by_name(NAME).experiment_id],
                                  "tags.`medtune.role` = 'trial'")
    return {"code": code, "out": console.getvalue(), "log": entries(log), "head": head_id, "worker": worker_id,
            "killed": killed, "client": client, "runs": runs, "home": str(work / "runs"),
            "seconds": time.monotonic() - started}


def test_trials_ran_on_both_nodes(cluster_run):
    nodes = {e["node"] for e in cluster_run["log"] if e["event"] == "report"}
    assert nodes == {cluster_run["head"], cluster_run["worker"]}, nodes


def test_worker_node_death_loses_and_doubles_no_trial(cluster_run, fault_log):
    run, client = cluster_run, cluster_run["client"]
    assert run["killed"], "the worker node was never killed mid-trial"
    assert run["code"] == 0, run["out"][-3000:]
    trial_ids = [r.data.tags["medtune.trial_id"] for r in run["runs"]]
    assert len(trial_ids) == SAMPLES and len(set(trial_ids)) == SAMPLES, trial_ids
    for r in run["runs"]:  # every trial finished, or failed with its reason
        assert r.info.status == "FINISHED" or (r.info.status == "FAILED" and r.data.tags.get("medtune.error")), r
        steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, "val/f1_macro"))
        if r.info.status == "FINISHED":
            assert steps == list(range(1, EPOCHS + 1)), (r.data.tags["medtune.trial_id"], steps)
    assert f"Trials: {SAMPLES} of {SAMPLES}:" in run["out"]
    study = optuna.load_study(study_name=NAME, storage=ExperimentState(run["home"], NAME).optuna_storage)
    assert len(study.trials) == SAMPLES and "RUNNING" not in {t.state.name for t in study.trials}
    fault_log(fault="Ray worker node killed mid-trial (2-node cluster, --max-failures 1)", kills=1,
              trials_lost=SAMPLES - len(set(trial_ids)), runs_doubled=len(trial_ids) - len(set(trial_ids)),
              outcome=f"trial(s) on it resumed on the head node from their checkpoint; "
                      f"{sum(r.info.status == 'FINISHED' for r in run['runs'])}/{SAMPLES} FINISHED")
    print(f"two-node cluster run took {run['seconds']:.0f} s")


def test_trial_on_the_dead_node_resumed_on_the_head_from_its_checkpoint(cluster_run):
    run = cluster_run
    for trial in run["killed"]["trials"]:
        attempts = [e for e in run["log"] if e["trial"] == trial]
        starts = [i for i, e in enumerate(attempts) if e["event"] == "start"]
        assert len(starts) == 2, attempts  # the first on the worker node, the retry after its death
        retry = attempts[starts[1]:]
        assert retry[0]["resumed"] and retry[0]["node"] == run["head"], retry
        first_epoch = next(e["epoch"] for e in retry if e["event"] == "report")
        assert first_epoch > 1, retry  # continued from its checkpoint, not from epoch 1
        assert all(e["node"] == run["head"] for e in retry)
