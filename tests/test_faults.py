"""Trial faults through the whole engine (tune-run on a local Ray cluster, a real MLflow server):
a diverging learning rate (NaN loss), a batch size BatchNorm cannot train on, an out-of-memory
error from the second epoch on, and a worker process killed once. Each failed trial ends FAILED
with its reason, is retried from its checkpoint up to --max-failures, never counts as best or
enters the Pareto front, and the experiment goes on. The experiment is the one
tests/test_resume.py checks through driver kills (tests/faulty_experiment.py); its faults come
after the kills, under one driver."""
import json
import os
import subprocess
import sys

import optuna
import pytest

from faulty_experiment import BATCH_OF_ONE, EPOCHS, KILLED, NAME, NAN, OOM, SAMPLES, STATUS, UNTOUCHED
from search.home import ExperimentState

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAULTS = (NAN, BATCH_OF_ONE, OOM)  # the trials that fail


@pytest.fixture
def faulty(faulty_and_resumed):
    return faulty_and_resumed


def history(faulty, index: int) -> list[int]:
    run = faulty["by_index"][index]
    return sorted(m.step for m in faulty["client"].get_metric_history(run.info.run_id, "val/f1_macro"))


@pytest.mark.slow
def test_every_trial_is_accounted_for_with_its_reason(faulty, fault_log):
    runs, by_index = faulty["trials"], faulty["by_index"]
    assert faulty["code"] == 0, faulty["fifth"][-3000:]
    assert len(runs) == SAMPLES and sorted(by_index) == list(range(SAMPLES))  # one run per trial, none doubled
    status = {i: r.info.status for i, r in by_index.items()}
    assert status == STATUS, status
    error = {i: by_index[i].data.tags.get("medtune.error", "") for i in FAULTS}
    assert "FloatingPointError" in error[NAN] and ("nan" in error[NAN] or "inf" in error[NAN]), error[NAN]
    assert "ValueError" in error[BATCH_OF_ONE] and "Expected more than 1 value per channel" in error[BATCH_OF_ONE], \
        error[BATCH_OF_ONE]
    assert "OutOfMemoryError" in error[OOM] and "out of memory" in error[OOM].lower(), error[OOM]
    headline = {i: text.split(";")[0] for i, text in error.items()}  # the error's type and first clause
    counts = {"trials_lost": SAMPLES - len(by_index), "runs_doubled": len(runs) - len(by_index)}
    fault_log(fault="trial loss becomes NaN (SGD, optim/lr=1e12)", outcome=f"FAILED: {headline[NAN]}", **counts)
    fault_log(fault="trial raises on a sampled value (train/batch_size=1 under BatchNorm)",
              outcome=f"FAILED: {headline[BATCH_OF_ONE]}", **counts)
    fault_log(fault="trial runs out of memory in epoch 2 (injected torch.OutOfMemoryError)",
              outcome=f"FAILED after epoch 1: {headline[OOM]}", **counts)


@pytest.mark.slow
def test_failures_are_retried_from_the_last_checkpoint_up_to_max_failures(faulty, fault_log):
    starts, reports = {}, {}
    for a in faulty["attempts"]:
        if a["event"] == "start":
            starts.setdefault(a["trial"], []).append(a["resumed"])
        else:
            reports.setdefault(a["trial"], []).append(a["epoch"])
    # one attempt for the healthy trial no driver kill reached; 1 + --max-failures for each failing one
    after_kills = {i: s for i, s in starts.items() if i >= NAN}  # trials 0 and 1 took the driver kills
    assert after_kills == {NAN: [False, False], BATCH_OF_ONE: [False, False], OOM: [False, True],
                           KILLED: [False, True], UNTOUCHED: [False]}, starts
    assert reports.get(NAN) is None and reports.get(BATCH_OF_ONE) is None  # both failed before any epoch ended
    assert reports[OOM] == [1]  # epoch 1, then out of memory in epoch 2 on both attempts
    assert reports[KILLED] == list(range(1, EPOCHS + 1))  # the retry continued at epoch 2, not at epoch 1
    assert history(faulty, KILLED) == list(range(1, EPOCHS + 1))
    assert history(faulty, UNTOUCHED) == list(range(1, EPOCHS + 1))
    assert history(faulty, OOM) == [1]
    out = faulty["summary_killed"]  # the driver the faults ran under
    assert out.count("retrying from its epoch-1 checkpoint") == 2  # OOM and KILLED
    assert out.count("retrying from the start") == 2  # the NaN and the batch-size trial
    runs = faulty["trials"]
    fault_log(fault="trial worker process SIGKILLed after epoch 1 (--max-failures 1)", kills=1,
              trials_lost=SAMPLES - len(faulty["by_index"]), runs_doubled=len(runs) - len(faulty["by_index"]),
              outcome="retried from its epoch-1 checkpoint; FINISHED, each epoch tracked once")


@pytest.mark.slow
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
    best_line = [line for line in faulty["summary_killed"].splitlines() if "| best " in line][-1]
    assert any(r.data.tags["medtune.trial_id"] in best_line for r in by_index.values()
               if r.info.run_id in finished), best_line


@pytest.mark.slow
def test_summary_counts_trials_and_says_why_each_failed(faulty):
    out = faulty["fifth"]  # the summary in full (the driver the faults ran under was killed as it began)
    assert f"Trials: {SAMPLES} of {SAMPLES}: {SAMPLES - len(FAULTS)} finished, 0 stopped early, 3 failed" in out
    failed = [line for line in out.splitlines() if line.startswith("  failed ")]
    assert len(failed) == 3, failed
    for line in failed:
        assert len(line) < 300 and "Traceback" not in line and 'File "' not in line, line
    reasons = " ".join(failed)
    assert "FloatingPointError" in reasons and "ValueError" in reasons and "OutOfMemoryError" in reasons
    study = optuna.load_study(study_name=NAME, storage=ExperimentState(faulty["home"], NAME).optuna_storage)
    assert [t.state.name for t in study.trials] == ["FAIL" if i in FAULTS else "COMPLETE" for i in range(SAMPLES)]


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
