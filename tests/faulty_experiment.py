"""The one experiment tests/test_faults.py and tests/test_resume.py both check: seven trials of a
space whose trial number picks a healthy config or one a real fault follows from, run by a
`tune-run` driver that is interrupted with Ctrl-C, then SIGKILLed before the first trial
finishes, in the middle of a trial and during the final summary, and resumed each time.

Trials 0 and 1 are healthy and take the driver kills. The faults come after the last kill
mid-trial: 2 diverges (NaN loss), 3 trains BatchNorm on a batch of one image, 4 runs out of
memory from its second epoch on, 5 has its worker process SIGKILLed after epoch 1; 6 is healthy
and never interrupted. Run as a script, this file is that driver: tune-run (search.cli.run_main)
with the faults that cannot be caused for real here added to the trainable.
"""
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

NAME, SAMPLES, EPOCHS = "crashy", 7, 2
NAN, BATCH_OF_ONE, OOM, KILLED = 2, 3, 4, 5  # trial numbers of the faults
UNTOUCHED = 6  # healthy, and never interrupted
STATUS = {0: "FINISHED", 1: "FINISHED", NAN: "FAILED", BATCH_OF_ONE: "FAILED", OOM: "FAILED",
          KILLED: "FINISHED", UNTOUCHED: "FINISHED"}  # each trial's MLflow status in the end
METRIC = "val/f1_macro"
SPACE = '''"""Seven trials; the Optuna trial number picks a healthy config or one a real fault follows from."""
TRAINABLE = "classification"
OBJECTIVES = {"val/f1_macro": "max", "perf/train_images_per_s": "max"}
DEFAULTS = {"model/backbone": "test_resnet", "data/image_size": 32, "train/epochs": %d, "optim/name": "sgd",
            "data/fraction": 0.25, "train/bn_reestimate_images": 64,  # a few seconds per epoch
            "figures/draw": False, "train/checkpoint_s": 0}  # a checkpoint every epoch: retries resume from one
HEALTHY = {"optim/lr": 0.01, "train/batch_size": 8}
PLAN = {%d: {"optim/lr": 1e12},        # diverges: the loss becomes NaN or inf
        %d: {"train/batch_size": 1}}   # BatchNorm cannot train on a batch of one image


def space(trial):
    plan = {**HEALTHY, **PLAN.get(trial.number, {}), "train/seed": trial.number}
    for key, value in plan.items():  # a one-point range: this trial's value
        (trial.suggest_float if isinstance(value, float) else trial.suggest_int)(key, value, value)
''' % (EPOCHS, NAN, BATCH_OF_ONE)
HOLD = "MEDTUNE_TEST_HOLD_FAULTS"  # set for the drivers the test kills: trials from NAN on wait


def with_faults(trainable):
    """The trainable plus a fault that cannot be caused for real here, by trial number (the space
    makes it each trial's train/seed): OOM runs out of memory in backward() from its second
    epoch on (as a GPU would). KILLED is killed by tests/trials.py:recorded."""
    def train(config):
        import torch
        from ray import tune

        index = config["train"]["seed"]
        resumed = tune.get_checkpoint() is not None
        reported = []
        report, backward = tune.report, torch.Tensor.backward

        def counted_report(metrics, checkpoint=None):
            report(metrics, checkpoint=checkpoint)
            reported.append(metrics["epoch"])

        def backward_or_oom(tensor, *args, **kwargs):
            if index == OOM and (resumed or reported):
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by the test)")
            return backward(tensor, *args, **kwargs)

        tune.report, torch.Tensor.backward = counted_report, backward_or_oom
        try:
            trainable(config)
        finally:
            tune.report, torch.Tensor.backward = report, backward

    return train


def held(trainable, hold: bool):
    """With hold, a trial from NAN on waits, unrecorded, for its driver to be killed instead of
    starting, so that the faults play out under one driver, after the kills mid-trial; a trial
    before NAN reports its first epoch, then waits instead of reporting another, so that the kill
    mid-trial finds it between its first and last epoch however short an epoch is."""
    def train(config):
        from ray import tune

        while hold and config["train"]["seed"] >= NAN:
            time.sleep(1)
        report = tune.report

        def report_or_wait(metrics, checkpoint=None):
            while hold and metrics["epoch"] > 1:
                time.sleep(1)
            report(metrics, checkpoint=checkpoint)

        tune.report = report_or_wait
        try:
            trainable(config)
        finally:
            tune.report = report

    return train


class Driver:
    """A tune-run process (this file as a script) whose console is collected line by line."""

    def __init__(self, args: list[str], env: dict, cwd: str, hold: bool = False):
        env = {**env, HOLD: "1"} if hold else env
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), *args], env=env, cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, condition, timeout: float = 300, every: float = 0.05) -> None:
        """Poll condition() every `every` seconds until it holds; fail if the driver exits or time
        runs out first."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, f"tune-run exited first:\n{self.output[-3000:]}"
            assert time.monotonic() < deadline, f"timed out waiting:\n{self.output[-3000:]}"
            time.sleep(every)

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


def epochs_tracked(client) -> dict[str, list]:
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
    from ray.tune import ExperimentAnalysis

    logging.getLogger("ray.tune.analysis").setLevel(logging.ERROR)  # not about trials without results yet
    try:
        trials = ExperimentAnalysis(exp_path).trials
    except Exception:  # no state saved yet, or a copy of it being written
        return {}
    return {t.trial_id: int(os.path.basename(t.checkpoint.path).split("_")[-1]) + 1 if t.checkpoint else 0
            for t in trials}


def kill_between_epochs(driver: Driver, client, exp_path: str, condition) -> dict[str, int]:
    """SIGKILL the driver once condition(epochs per trial) holds; return those epoch counts.

    The driver is frozen (SIGSTOP) to look, and killed only if every epoch MLflow has is
    covered by a checkpoint in Ray's saved state. Ray logs a result to MLflow (callbacks) a
    moment before the result's checkpoint is registered and saved in its experiment state; a
    kill inside that moment would have the resumed trial redo the epoch and log it again.
    """
    while True:
        driver.wait_for(lambda: condition({t: len(h) for t, h in epochs_tracked(client).items()}),
                        every=0.5)  # each look asks MLflow for every trial's metric history
        driver.proc.send_signal(signal.SIGSTOP)
        time.sleep(0.3)  # a write the driver sent just before has reached the server
        counts = {t: len(h) for t, h in epochs_tracked(client).items()}
        saved = checkpointed_epochs(exp_path)
        if condition(counts) and all(saved.get(t, 0) >= n for t, n in counts.items()):
            driver.kill()
            return counts
        driver.proc.send_signal(signal.SIGCONT)
        time.sleep(0.1)


def run(work, mlflow_server: str) -> dict:
    """Run the experiment through a Ctrl-C, three driver kills and four resumes; keep what each saw."""
    from mlflow import MlflowClient

    from search.export import export_experiment
    from trials import entries

    space = work / "faulty_space.py"
    space.write_text(SPACE)
    home, log = work / "runs", str(work / "attempts.jsonl")
    env = {**os.environ, "MEDTUNE_HOME": str(home), "MEDTUNE_CACHE": str(work / "cache"),
           "MLFLOW_TRACKING_URI": mlflow_server, "MEDTUNE_TEST_ATTEMPTS": log}
    env.pop("RAY_ADDRESS", None)  # each driver starts its own Ray, which dies with it
    client = MlflowClient(mlflow_server)
    exp_path = str(home / "ray" / NAME)
    args = [str(space), "--name", NAME, "--num-samples", str(SAMPLES), "--scheduler", "fifo",
            "--sampler", "random", "--max-failures", "1"]
    resume = [str(space), "--name", NAME, "--resume"]
    seen, started = {"timeline": []}, time.monotonic()

    def mark(stage: str) -> None:
        seen["timeline"].append(f"{stage} at {time.monotonic() - started:.0f} s")

    drivers = []

    def start(arguments: list[str], hold: bool = False) -> Driver:
        drivers.append(Driver(arguments, env, work, hold))
        return drivers[-1]

    try:
        # 1. Ctrl-C as the first trial starts, seconds before any epoch can end: a result in flight
        # would be logged while its checkpoint is not yet in the state Ray saves as it stops
        first = start(args, hold=True)
        first.wait_for(lambda: " started" in first.output)
        seen["interrupted"] = (first.signal(signal.SIGINT), first.output)
        mark("interrupted with Ctrl-C")
        seen["parent"] = client.search_runs([client.get_experiment_by_name(NAME).experiment_id],
                                            "tags.`medtune.role` = 'parent'")[0].info.run_id

        second = start(resume, hold=True)  # 2. killed while the first trials run their first epoch
        second.wait_for(lambda: " started" in second.output)
        seen["before_first_end"] = kill_between_epochs(second, client, exp_path, lambda counts: True)
        mark("killed before the first trial ended")

        third = start(resume, hold=True)  # 3. killed with a trial between its first and last epoch
        seen["mid_trial"] = kill_between_epochs(third, client, exp_path,
                                                lambda counts: any(0 < n < EPOCHS for n in counts.values()))
        mark("killed mid-trial")

        fourth = start(resume)  # 4. the faults; killed as soon as the summary begins
        fourth.wait_for(lambda: "Trials:" in fourth.output, timeout=900)
        fourth.kill()
        mark("killed during the summary")
        seen["summary_killed"] = fourth.output
        seen["parent_after_summary_kill"] = client.get_run(seen["parent"]).info.status

        fifth = start(resume)  # 5. the search is over: its summary only
        seen["fifth"], seen["code"] = fifth.finish(), fifth.proc.returncode
        mark("summary printed again")
    finally:  # a check that failed leaves no driver running (kill() does nothing to one that exited)
        for driver in drivers:
            driver.proc.kill()
    experiment = client.get_experiment_by_name(NAME)
    runs = client.search_runs([experiment.experiment_id])
    seen["parents"] = [r for r in runs if r.data.tags.get("medtune.role") == "parent"]
    seen["trials"] = [r for r in runs if r.data.tags.get("medtune.role") == "trial"]
    index = {r.data.tags["medtune.trial_id"]: int(r.data.params["train/seed"]) for r in seen["trials"]}
    seen["by_index"] = {index[r.data.tags["medtune.trial_id"]]: r for r in seen["trials"]}
    seen["attempts"] = [{**a, "trial": index[a["trial"]]} for a in entries(log)]  # by trial number
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDTUNE_HOME", str(home))
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        seen["export"] = export_experiment(NAME, str(work / "best.yaml"))
    seen.update(client=client, home=str(home))
    return seen


if __name__ == "__main__":  # a tune-run driver with the faults
    from search.cli import run_main
    from trials import engine_trainables, recorded

    hold, log = bool(os.environ.get(HOLD)), os.environ["MEDTUNE_TEST_ATTEMPTS"]
    engine_trainables(pytest.MonkeyPatch(), lambda trainable: held(recorded(
        with_faults(trainable), log, kill_after_epoch=1, kill_if=lambda config: config["train"]["seed"] == KILLED), hold))
    sys.exit(run_main(sys.argv[1:]))
