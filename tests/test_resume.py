"""Crash and resume: the `tune-run` driver is interrupted with Ctrl-C, then SIGKILLed before the
first trial finishes, in the middle of a trial and during the final summary; each time `--resume`
carries on. In the end every trial ran once, every epoch is tracked once, the Optuna study holds
each trial once, and a resume of the finished experiment only prints its summary again."""
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time

import optuna
import pytest
from mlflow import MlflowClient
from ray.tune import ExperimentAnalysis

from search.experiment import Settings, save_settings
from search.runner import optuna_storage
from search.sampling import SpaceSampler, make_sampler
from search.searcher import ResumableOptunaSearch
from search.spacefile import load_space

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUNE_RUN = os.path.join(os.path.dirname(sys.executable), "tune-run")
SPACE = os.path.join(ROOT, "spaces", "classification.py")
NAME, SAMPLES, EPOCHS = "crashy", 3, 3
ARGS = [SPACE, "--smoke-test", "--name", NAME, "--num-samples", str(SAMPLES), "--scheduler", "fifo",
        "--set", "data/image_size=32", "--set", f"train/epochs={EPOCHS}"]
METRIC = "val/f1_macro"


class Driver:
    """A `tune-run` process whose console is collected line by line as it is printed."""

    def __init__(self, args: list[str], env: dict, cwd: str):
        self.proc = subprocess.Popen([TUNE_RUN, *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, condition, timeout: float = 300) -> None:
        """Poll condition() until it holds; fail if the driver exits or time runs out first."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, f"tune-run exited first:\n{self.output[-3000:]}"
            assert time.monotonic() < deadline, f"timed out waiting:\n{self.output[-3000:]}"
            time.sleep(0.05)

    def finish(self, timeout: float = 600) -> str:
        assert self.proc.wait(timeout) == 0, f"tune-run failed:\n{self.output[-3000:]}"
        self.reader.join(10)
        return self.output

    def signal(self, signum: int) -> int:
        """Send signum, wait for the driver to exit; its exit code."""
        self.proc.send_signal(signum)
        code = self.proc.wait(120)
        self.reader.join(10)
        return code

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        time.sleep(2)  # the driver's local Ray processes notice it is gone and exit


def epochs_tracked(client: MlflowClient) -> dict[str, list]:
    """trial id -> the metric points MLflow holds for it (one per reported epoch)."""
    experiment = client.get_experiment_by_name(NAME)
    if experiment is None:
        return {}
    runs = client.search_runs([experiment.experiment_id], "tags.`medtune.role` = 'trial'")
    return {r.data.tags["medtune.trial_id"]: client.get_metric_history(r.info.run_id, METRIC) for r in runs}


def checkpointed_epochs(exp_path: str) -> dict[str, int]:
    """trial id -> the epoch of its checkpoint in Ray Tune's saved experiment state: where a
    resume continues. Ray names a trial's checkpoints checkpoint_000000, checkpoint_000001, ...
    and these trainables save one per epoch."""
    logging.getLogger("ray.tune.analysis").setLevel(logging.ERROR)  # not about trials without results yet
    try:
        trials = ExperimentAnalysis(exp_path).trials
    except Exception:  # no state saved yet, or a copy of it being written
        return {}
    return {t.trial_id: int(os.path.basename(t.checkpoint.path).split("_")[-1]) + 1 if t.checkpoint else 0
            for t in trials}


def kill_between_epochs(driver: Driver, client: MlflowClient, exp_path: str, condition) -> dict[str, int]:
    """SIGKILL the driver once condition(epochs per trial) holds; return those epoch counts.

    The driver is frozen (SIGSTOP) to look, and killed only if every epoch MLflow has is
    covered by a checkpoint in Ray's saved state. Ray logs a result to MLflow (callbacks) a
    moment before the result's checkpoint is registered and saved in its experiment state; a
    kill inside that moment would have the resumed trial redo the epoch and log it again.
    """
    while True:
        driver.wait_for(lambda: condition({t: len(h) for t, h in epochs_tracked(client).items()}))
        driver.proc.send_signal(signal.SIGSTOP)
        time.sleep(0.3)  # a write the driver sent just before has reached the server
        counts = {t: len(h) for t, h in epochs_tracked(client).items()}
        saved = checkpointed_epochs(exp_path)
        if condition(counts) and all(saved.get(t, 0) >= n for t, n in counts.items()):
            driver.kill()
            return counts
        driver.proc.send_signal(signal.SIGCONT)
        time.sleep(0.1)


@pytest.fixture(scope="module")
def crashed_and_resumed(tmp_path_factory, mlflow_server):
    """Run the experiment through a Ctrl-C, three driver kills and four resumes; keep what each saw."""
    work = tmp_path_factory.mktemp("resume")
    env = {**os.environ, "MEDTUNE_HOME": str(work / "runs"), "MEDTUNE_CACHE": str(work / "cache"),
           "MLFLOW_TRACKING_URI": mlflow_server}
    client = MlflowClient(mlflow_server)
    exp_path = str(work / "runs" / "ray" / NAME)
    resume = [SPACE, "--name", NAME, "--resume"]
    seen, started = {"timeline": []}, time.monotonic()

    def mark(stage: str) -> None:
        seen["timeline"].append(f"{stage} at {time.monotonic() - started:.0f} s")

    # 1. Ctrl-C as the first trial starts, seconds before any epoch can end: a result in flight
    # would be logged while its checkpoint is not yet in the state Ray saves as it stops
    first = Driver(ARGS, env, work)
    first.wait_for(lambda: " started" in first.output)
    seen["interrupted"] = (first.signal(signal.SIGINT), first.output)
    mark("interrupted with Ctrl-C")
    seen["parent"] = client.search_runs([client.get_experiment_by_name(NAME).experiment_id],
                                        "tags.`medtune.role` = 'parent'")[0].info.run_id

    second = Driver(resume, env, work)  # 2. killed while the first trials run their first epoch
    second.wait_for(lambda: " started" in second.output)
    seen["before_first_end"] = kill_between_epochs(second, client, exp_path, lambda counts: True)
    mark("killed before the first trial ended")

    third = Driver(resume, env, work)  # 3. killed with a trial between its first and last epoch
    seen["mid_trial"] = kill_between_epochs(third, client, exp_path,
                                            lambda counts: any(0 < n < EPOCHS for n in counts.values()))
    mark("killed mid-trial")

    fourth = Driver(resume, env, work)  # 4. killed as soon as the summary begins
    fourth.wait_for(lambda: "Trials:" in fourth.output)
    fourth.kill()
    mark("killed during the summary")
    seen["summary_killed"] = fourth.output
    seen["parent_after_summary_kill"] = client.get_run(seen["parent"]).info.status

    seen["fifth"] = Driver(resume, env, work).finish()  # 5. the search is over: its summary only
    mark("summary printed again")
    experiment = client.get_experiment_by_name(NAME)
    runs = client.search_runs([experiment.experiment_id])
    seen["parents"] = [r for r in runs if r.data.tags.get("medtune.role") == "parent"]
    seen["trials"] = [r for r in runs if r.data.tags.get("medtune.role") == "trial"]
    seen.update(client=client, home=str(work / "runs"))
    return seen


def test_each_kill_landed_at_its_moment(crashed_and_resumed):
    seen = crashed_and_resumed
    assert all(n < EPOCHS for n in seen["before_first_end"].values()), seen["before_first_end"]
    assert any(0 < n < EPOCHS for n in seen["mid_trial"].values()), seen["mid_trial"]
    code, out = seen["interrupted"]  # Ctrl-C: Ray saved its state; the driver says how to go on
    assert code == 130 and f"'{NAME}' was interrupted; its state is saved" in out and "--resume" in out, out[-2000:]
    assert "Trials:" not in out and "Traceback" not in out
    assert "Trials:" in seen["summary_killed"]
    assert seen["parent_after_summary_kill"] == "RUNNING"  # the summary never got to its end


def test_every_trial_ran_once_and_every_epoch_is_tracked_once(crashed_and_resumed, fault_log):
    seen, client = crashed_and_resumed, crashed_and_resumed["client"]
    assert [p.info.run_id for p in seen["parents"]] == [seen["parent"]]  # the same parent run throughout
    assert seen["parents"][0].info.status == "FINISHED"
    trial_ids = [r.data.tags["medtune.trial_id"] for r in seen["trials"]]
    assert len(trial_ids) == SAMPLES and len(set(trial_ids)) == SAMPLES, trial_ids
    for run in seen["trials"]:
        assert run.info.status == "FINISHED", run.data.tags["medtune.trial_id"]
        assert run.data.tags["mlflow.parentRunId"] == seen["parent"]
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, METRIC))
        assert steps == list(range(1, EPOCHS + 1)), (run.data.tags["medtune.trial_id"], steps)
    # a trial interrupted mid-way continued from its checkpoint: a restart from epoch 0 would re-log epoch 1
    midway = [t for t, n in seen["mid_trial"].items() if 0 < n < EPOCHS]
    assert midway and set(midway) <= set(trial_ids)
    lost, doubled = SAMPLES - len(set(trial_ids)), len(trial_ids) - len(set(trial_ids))
    for what in ("interrupted with Ctrl-C (SIGINT) as the first trial started",
                 "SIGKILLed before the first trial finished",
                 f"SIGKILLed mid-trial ({len(midway)} trial(s) between epoch 1 and {EPOCHS})",
                 "SIGKILLed during the final summary"):
        fault_log(fault=f"tune-run driver {what}", kills=1, trials_lost=lost, runs_doubled=doubled,
                  outcome=f"--resume finished {SAMPLES}/{SAMPLES} trials, each epoch tracked once")


def test_optuna_study_holds_each_trial_once(crashed_and_resumed):
    seen = crashed_and_resumed
    study = optuna.load_study(study_name=NAME, storage=optuna_storage(seen["home"]))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * SAMPLES  # no stale ask left, none doubled
    assert [t.number for t in study.trials] == list(range(SAMPLES))
    # the asks made after each resume came from this same study: one Optuna trial per trial run
    sampled = sorted(tuple(sorted((k, str(v)) for k, v in t.params.items())) for t in study.trials)
    tracked = sorted(tuple(sorted((k, r.data.params[k]) for k in study.trials[0].params)) for r in seen["trials"])
    assert sampled == tracked


def test_resume_after_the_search_only_prints_the_summary(crashed_and_resumed, fault_log):
    seen = crashed_and_resumed
    out = seen["fifth"]
    assert "already ran its search" in out and " started" not in out  # no trial ran again
    assert f"Trials: {SAMPLES} of {SAMPLES}: {SAMPLES} finished, 0 stopped early, 0 failed" in out
    assert "Pareto front" in out and "MLflow: http://127.0.0.1" in out
    with open(seen["client"].download_artifacts(seen["parent"], "pareto.json")) as f:
        front = {m["trial_id"] for m in json.load(f)["front"]}
    assert front and all(trial_id in out for trial_id in front)
    fault_log(fault="--resume of an experiment whose search had finished",
              outcome="summary printed again; no trial started")
    print("crash-and-resume chain: " + "; ".join(seen["timeline"]))


def test_resume_without_ray_state_is_a_clear_error(tmp_path, fault_log):
    home = tmp_path / "runs"
    save_settings(str(home), Settings(name="lost", space_path=SPACE, num_samples=2))
    env = {**os.environ, "MEDTUNE_HOME": str(home), "MEDTUNE_CACHE": str(tmp_path / "cache")}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([TUNE_RUN, SPACE, "--name", "lost", "--resume"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    error = proc.stderr.strip()
    assert "'lost' cannot be resumed" in error and "no Ray Tune state at" in error and "another --name" in error
    assert "Traceback" not in proc.stderr and len(error.splitlines()) == 1
    assert not (home / "mlflow").exists() and not (home / "ray").exists()  # nothing was started
    fault_log(fault="--resume of an experiment whose Ray Tune state is missing", bad_inputs=1,
              error=error.replace(str(tmp_path), "<tmp>"),
              outcome="exit 2 before starting anything")


def test_restored_searcher_reattaches_the_asks_a_killed_driver_left(tmp_path):
    """Ray saved the searcher after trial 1 was asked; the driver asked trial 2 and died."""
    space = load_space(SPACE)
    settings = Settings(name="asks", space_path=SPACE, num_samples=4, smoke_test=True)
    constants = settings.constants(space)
    storage = optuna_storage(str(tmp_path))

    def searcher() -> ResumableOptunaSearch:  # as build_tuner makes it, and as Ray unpickles it
        made = ResumableOptunaSearch(
            space=SpaceSampler(space.path, constants, set(settings.pinned(space)), space.defaults),
            metric=list(space.objectives), mode=list(space.objectives.values()),
            sampler=make_sampler("tpe", 0), study_name="asks", storage=optuna.storages.RDBStorage(storage))
        return pickle.loads(pickle.dumps(made))

    result = {**{metric: 0.5 for metric in space.objectives}, "epoch": constants["train/epochs"]}  # trained it all
    first = searcher()
    first.suggest("t0")
    first.on_trial_complete("t0", result=result)
    first.suggest("t1")
    first.save(str(tmp_path / "searcher.pkl"))  # Ray's experiment checkpoint
    lost = first.suggest("t2")  # asked, never checkpointed
    study = optuna.load_study(study_name="asks", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING", "RUNNING"]

    second = searcher()
    second.restore(str(tmp_path / "searcher.pkl"))
    assert second.suggest("t2-again") == lost  # the same Optuna trial, with the values it had
    second.suggest("t3")  # then new asks, in the same study
    for trial_id in ("t1", "t2-again", "t3"):
        second.on_trial_complete(trial_id, result=result)
    study = optuna.load_study(study_name="asks", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
