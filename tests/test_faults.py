"""Trial faults through the whole engine (run_experiment on a local Ray cluster, a real MLflow
server): a diverging learning rate (NaN loss), a batch size BatchNorm cannot train on, an
out-of-memory error from the second epoch on, and a worker process killed once. Each failed
trial ends FAILED with its reason, is retried from its checkpoint up to --max-failures, never
counts as best or enters the Pareto front, and the experiment goes on."""
import contextlib
import io
import json
import os
import subprocess
import sys

import optuna
import pytest
from mlflow import MlflowClient

import search.runner as runner
from search.experiment import Settings
from search.export import export_experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME, SAMPLES, EPOCHS = "faulty", 5, 2
OOM, KILLED = 3, 4  # trial indices whose faults the wrapper below causes
SPACE = '''"""Five trials; the Optuna trial number picks a healthy config or one a real fault follows from."""
TRAINABLE = "classification"
OBJECTIVES = {"val/f1_macro": "max", "perf/train_images_per_s": "max"}
DEFAULTS = {"model/backbone": "test_resnet", "data/image_size": 32, "train/epochs": %d, "optim/name": "sgd"}
HEALTHY = {"optim/lr": 0.01, "train/batch_size": 8}
PLAN = {1: {"optim/lr": 1e12},        # diverges: the loss becomes NaN or inf
        2: {"train/batch_size": 1}}   # BatchNorm cannot train on a batch of one image


def space(trial):
    plan = {**HEALTHY, **PLAN.get(trial.number, {}), "train/seed": trial.number}
    for key, value in plan.items():  # a one-point range: this trial's value
        (trial.suggest_float if isinstance(value, float) else trial.suggest_int)(key, value, value)
''' % EPOCHS


def with_faults(trainable, log: str):
    """The trainable plus the faults that cannot be caused for real here, by trial number (the
    space makes it each trial's train/seed): OOM runs out of memory in backward() from its
    second epoch on (as a GPU would), KILLED has its worker process SIGKILLed right after
    epoch 1 on its first attempt. Every attempt's start and every reported epoch is appended
    to `log`."""
    def train(config):
        import signal

        import torch
        from ray import tune

        index = config["train"]["seed"]
        resumed = tune.get_checkpoint() is not None
        reported = []

        def note(**entry):
            with open(log, "a") as f:
                f.write(json.dumps({"trial": index, **entry}) + "\n")

        report, backward = tune.report, torch.Tensor.backward

        def logged_report(metrics, checkpoint=None):
            report(metrics, checkpoint=checkpoint)
            reported.append(metrics["epoch"])
            note(event="report", epoch=metrics["epoch"])
            if index == KILLED and not resumed:
                os.kill(os.getpid(), signal.SIGKILL)

        def backward_or_oom(tensor, *args, **kwargs):
            if index == OOM and (resumed or reported):
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by the test)")
            return backward(tensor, *args, **kwargs)

        note(event="start", resumed=resumed)
        tune.report, torch.Tensor.backward = logged_report, backward_or_oom
        try:
            trainable(config)
        finally:
            tune.report, torch.Tensor.backward = report, backward

    return train


@pytest.fixture(scope="module")
def faulty(tmp_path_factory, mlflow_server):
    work = tmp_path_factory.mktemp("faults")
    space = work / "faulty_space.py"
    space.write_text(SPACE)
    log = str(work / "attempts.jsonl")
    real = runner.lazy_trainable
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        patch.setenv("MEDTUNE_CACHE", str(work / "cache"))  # inherited by the Ray workers
        patch.setattr(runner, "lazy_trainable", lambda spec: with_faults(real(spec), log))
        settings = Settings(name=NAME, space_path=str(space), num_samples=SAMPLES, scheduler="fifo",
                            sampler="random", max_failures=1)
        home = str(work / "runs")
        console = io.StringIO()
        with contextlib.redirect_stdout(console):
            code = runner.run_experiment(settings, home)
        client = MlflowClient(mlflow_server)
        experiment = client.get_experiment_by_name(NAME)
        runs = client.search_runs([experiment.experiment_id], "tags.`medtune.role` = 'trial'")
        by_index = {int(r.data.params["train/seed"]): r for r in runs}
        with open(log) as f:
            attempts = [json.loads(line) for line in f]
        doc = export_experiment(NAME, str(work / "best.yaml"))
    return {"code": code, "out": console.getvalue(), "client": client, "runs": runs, "by_index": by_index,
            "attempts": attempts, "home": home, "export": doc}


def history(faulty, index: int) -> list[int]:
    run = faulty["by_index"][index]
    return sorted(m.step for m in faulty["client"].get_metric_history(run.info.run_id, "val/f1_macro"))


def test_every_trial_is_accounted_for_with_its_reason(faulty, fault_log):
    runs, by_index = faulty["runs"], faulty["by_index"]
    assert faulty["code"] == 0, faulty["out"][-3000:]
    assert len(runs) == SAMPLES and sorted(by_index) == list(range(SAMPLES))  # one run per trial, none doubled
    status = {i: r.info.status for i, r in by_index.items()}
    assert status == {0: "FINISHED", 1: "FAILED", 2: "FAILED", 3: "FAILED", 4: "FINISHED"}, status
    error = {i: by_index[i].data.tags.get("medtune.error", "") for i in (1, 2, 3)}
    assert "FloatingPointError" in error[1] and ("nan" in error[1] or "inf" in error[1]), error[1]
    assert "ValueError" in error[2] and "Expected more than 1 value per channel" in error[2], error[2]
    assert "OutOfMemoryError" in error[3] and "out of memory" in error[3].lower(), error[3]
    headline = {i: text.split(";")[0] for i, text in error.items()}  # the error's type and first clause
    counts = {"trials_lost": SAMPLES - len(by_index), "runs_doubled": len(runs) - len(by_index)}
    fault_log(fault="trial loss becomes NaN (SGD, optim/lr=1e12)", outcome=f"FAILED: {headline[1]}", **counts)
    fault_log(fault="trial raises on a sampled value (train/batch_size=1 under BatchNorm)",
              outcome=f"FAILED: {headline[2]}", **counts)
    fault_log(fault="trial runs out of memory in epoch 2 (injected torch.OutOfMemoryError)",
              outcome=f"FAILED after epoch 1: {headline[3]}", **counts)


def test_failures_are_retried_from_the_last_checkpoint_up_to_max_failures(faulty, fault_log):
    starts, reports = {}, {}
    for a in faulty["attempts"]:
        if a["event"] == "start":
            starts.setdefault(a["trial"], []).append(a["resumed"])
        else:
            reports.setdefault(a["trial"], []).append(a["epoch"])
    # one attempt for the healthy trial; 1 + --max-failures for each failing one
    assert starts == {0: [False], 1: [False, False], 2: [False, False], 3: [False, True], 4: [False, True]}, starts
    assert reports.get(1) is None and reports.get(2) is None  # both failed before any epoch ended
    assert reports[OOM] == [1]  # epoch 1, then out of memory in epoch 2 on both attempts
    assert reports[KILLED] == list(range(1, EPOCHS + 1))  # the retry continued at epoch 2, not at epoch 1
    assert history(faulty, KILLED) == list(range(1, EPOCHS + 1)) and history(faulty, 0) == list(range(1, EPOCHS + 1))
    assert history(faulty, OOM) == [1]
    assert faulty["out"].count("retrying from its epoch-1 checkpoint") == 2  # OOM and KILLED
    assert faulty["out"].count("retrying from the start") == 2  # the NaN and the batch-size trial
    runs = faulty["runs"]
    fault_log(fault="trial worker process SIGKILLed after epoch 1 (--max-failures 1)", kills=1,
              trials_lost=SAMPLES - len(faulty["by_index"]), runs_doubled=len(runs) - len(faulty["by_index"]),
              outcome="retried from its epoch-1 checkpoint; FINISHED, each epoch tracked once")


def test_failed_trials_never_count_as_best(faulty):
    client, by_index = faulty["client"], faulty["by_index"]
    finished = {r.info.run_id for r in by_index.values() if r.info.status == "FINISHED"}
    assert "val/f1_macro" in by_index[OOM].data.metrics  # it reported an epoch before failing
    parent = by_index[0].data.tags["mlflow.parentRunId"]
    with open(client.download_artifacts(parent, "pareto.json")) as f:
        front = {m["run_id"] for m in json.load(f)["front"]}
    assert front and front <= finished
    doc = faulty["export"]
    assert doc["best"]["run_id"] in finished and {m["run_id"] for m in doc["pareto"]} <= finished
    best_line = [line for line in faulty["out"].splitlines() if "| best " in line][-1]
    assert any(r.data.tags["medtune.trial_id"] in best_line for r in by_index.values()
               if r.info.run_id in finished), best_line


def test_summary_counts_trials_and_says_why_each_failed(faulty):
    out = faulty["out"]
    assert f"Trials: {SAMPLES} of {SAMPLES}: 2 finished, 0 stopped early, 3 failed" in out
    failed = [line for line in out.splitlines() if line.startswith("  failed ")]
    assert len(failed) == 3, failed
    for line in failed:
        assert len(line) < 300 and "Traceback" not in line and 'File "' not in line, line
    reasons = " ".join(failed)
    assert "FloatingPointError" in reasons and "ValueError" in reasons and "OutOfMemoryError" in reasons
    study = optuna.load_study(study_name=NAME, storage=runner.optuna_storage(faulty["home"]))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "FAIL", "FAIL", "COMPLETE"]


def test_faults_table_renders_the_log_with_totals(tmp_path):
    log = tmp_path / "faults.jsonl"
    rows = [{"test": "t::a", "fault": "driver SIGKILL mid-trial", "outcome": "resumed", "kills": 1,
             "trials_lost": 0, "runs_doubled": 0},
            {"test": "t::b", "fault": "--set optim/lr=x", "outcome": "exit 2", "bad_inputs": 1,
             "error": "optim/lr takes a number | not x"},
            {"test": "t::a", "fault": "driver SIGKILL mid-trial", "outcome": "resumed again", "kills": 1,
             "trials_lost": 0, "runs_doubled": 0}]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    script = os.path.join(ROOT, "scripts", "faults_table.py")
    out = subprocess.run([sys.executable, script, str(log)], capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert lines[0] == "| fault | kills survived | trials lost | runs doubled | bad inputs | outcome | error given |"
    assert len(lines) == 5  # header, rule, two faults (the repeated one once, its latest row), total
    assert "resumed again" in out and "| resumed |" not in out
    assert "optim/lr takes a number \\| not x" in lines[3]
    assert lines[4].startswith("| **total: 2 faults** | **1** | **0** | **0** | **1** |")
    missing = subprocess.run([sys.executable, script, str(tmp_path / "none.jsonl")], capture_output=True, text=True)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
