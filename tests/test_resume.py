"""Crash and resume: the `tune-run` driver is interrupted with Ctrl-C, then SIGKILLed before the
first trial finishes, in the middle of a trial and during the final summary; each time `--resume`
carries on. In the end every trial ran once, every epoch is tracked once, the Optuna study holds
each trial once, and a resume of the finished experiment only prints its summary again. The
experiment is the one tests/test_faults.py checks for trial faults (tests/faulty_experiment.py):
its trials end FINISHED or, the faulty ones, FAILED."""
import json
import os
import pickle
from dataclasses import asdict

import optuna
import pytest

from faulty_experiment import EPOCHS, NAME, SAMPLES, STATUS
from search.cli import run_main
from search.experiment import Settings
from search.home import ExperimentState
from search.sampling import SpaceSampler, make_sampler
from search.searcher import ResumableOptunaSearch
from search.spacefile import load_space

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACE = os.path.join(ROOT, "spaces", "classification.py")
METRIC = "val/f1_macro"
FINISHED = sum(status == "FINISHED" for status in STATUS.values())


@pytest.fixture
def crashed_and_resumed(faulty_and_resumed):
    return faulty_and_resumed


@pytest.mark.slow
def test_each_kill_landed_at_its_moment(crashed_and_resumed):
    seen = crashed_and_resumed
    assert all(n < EPOCHS for n in seen["before_first_end"].values()), seen["before_first_end"]
    assert any(0 < n < EPOCHS for n in seen["mid_trial"].values()), seen["mid_trial"]
    code, out = seen["interrupted"]  # Ctrl-C: Ray saved its state; the driver says how to go on
    assert code == 130 and f"'{NAME}' was interrupted; its state is saved" in out and "--resume" in out, out[-2000:]
    assert "Trials:" not in out and "Traceback" not in out
    assert "Trials:" in seen["summary_killed"]
    assert seen["parent_after_summary_kill"] == "RUNNING"  # the summary never got to its end


@pytest.mark.slow
def test_every_trial_ran_once_and_every_epoch_is_tracked_once(crashed_and_resumed, fault_log):
    seen, client = crashed_and_resumed, crashed_and_resumed["client"]
    assert [p.info.run_id for p in seen["parents"]] == [seen["parent"]]  # the same parent run throughout
    assert seen["parents"][0].info.status == "FINISHED"
    trial_ids = [r.data.tags["medtune.trial_id"] for r in seen["trials"]]
    assert len(trial_ids) == SAMPLES and len(set(trial_ids)) == SAMPLES, trial_ids
    for index, run in seen["by_index"].items():
        assert run.info.status == STATUS[index], (index, run.data.tags["medtune.trial_id"])
        assert run.data.tags["mlflow.parentRunId"] == seen["parent"]
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, METRIC))
        if run.info.status == "FINISHED":
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
                  outcome=f"--resume ended {SAMPLES}/{SAMPLES} trials, each epoch tracked once")


@pytest.mark.slow
def test_optuna_study_holds_each_trial_once(crashed_and_resumed):
    seen = crashed_and_resumed
    study = optuna.load_study(study_name=NAME, storage=ExperimentState(seen["home"], NAME).optuna_storage)
    expected = ["COMPLETE" if STATUS[n] == "FINISHED" else "FAIL" for n in range(SAMPLES)]
    assert [t.state.name for t in study.trials] == expected  # no stale ask left, none doubled
    assert [t.number for t in study.trials] == list(range(SAMPLES))
    # the asks made after each resume came from this same study: one Optuna trial per trial run
    sampled = sorted(tuple(sorted((k, str(v)) for k, v in t.params.items())) for t in study.trials)
    tracked = sorted(tuple(sorted((k, r.data.params[k]) for k in study.trials[0].params)) for r in seen["trials"])
    assert sampled == tracked


@pytest.mark.slow
def test_resume_after_the_search_only_prints_the_summary(crashed_and_resumed, fault_log):
    seen = crashed_and_resumed
    out = seen["fifth"]
    assert "already ran its search" in out and " started" not in out  # no trial ran again
    assert "Checks:" not in out and "Ray:" not in out  # nothing to check or to run trials on
    assert f"Trials: {SAMPLES} of {SAMPLES}: {FINISHED} finished, 0 stopped early, {SAMPLES - FINISHED} failed" in out
    assert "Pareto front" in out and "MLflow: http://127.0.0.1" in out
    with open(seen["client"].download_artifacts(seen["parent"], "pareto.json")) as f:
        front = {m["trial_id"] for m in json.load(f)["front"]}
    assert front and all(trial_id in out for trial_id in front)
    fault_log(fault="--resume of an experiment whose search had finished",
              outcome="summary printed again; no trial started")
    print("crash-and-resume chain: " + "; ".join(seen["timeline"]))


def test_resume_without_ray_state_is_a_clear_error(tmp_path, monkeypatch, capsys, fault_log):
    home = tmp_path / "runs"
    ExperimentState(str(home), "lost").save_settings(asdict(Settings(name="lost", space_path=SPACE, num_samples=2)))
    monkeypatch.setenv("MEDTUNE_HOME", str(home))
    monkeypatch.setenv("MEDTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert run_main([SPACE, "--name", "lost", "--resume"]) == 2
    stderr = capsys.readouterr().err
    error = stderr.strip()
    assert "'lost' cannot be resumed" in error and "no Ray Tune state at" in error and "another --name" in error
    assert "Traceback" not in stderr and len(error.splitlines()) == 1
    assert not (home / "mlflow").exists() and not (home / "ray").exists()  # nothing was started
    fault_log(fault="--resume of an experiment whose Ray Tune state is missing", bad_inputs=1,
              error=error.replace(str(tmp_path), "<tmp>"),
              outcome="exit 2 before starting anything")


def test_restored_searcher_reattaches_the_asks_a_killed_driver_left(tmp_path):
    """Ray saved the searcher after trial 1 was asked; the driver asked trial 2 and died."""
    space = load_space(SPACE)
    settings = Settings(name="asks", space_path=SPACE, num_samples=4, smoke_test=True)
    constants = settings.constants(space)
    storage = ExperimentState(str(tmp_path), "asks").optuna_storage

    def searcher() -> ResumableOptunaSearch:  # as build_tuner makes it, and as Ray unpickles it
        made = ResumableOptunaSearch(
            space=SpaceSampler(space, constants, set(settings.pinned(space))),
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
