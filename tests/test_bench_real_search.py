"""scripts/bench_real_search.py: real `tune-run` searches, read back from Ray Tune's state in the order their
trials were made."""
import math
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACE = os.path.join(ROOT, "benchmarks", "classification_space.py")


@pytest.fixture
def script(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "scripts"))
    import bench_real_search

    return bench_real_search


@pytest.mark.slow  # reads the session's smoke search
def test_the_trials_spent_and_best_are_those_the_experiment_tracked(e2e, script):
    client, home = e2e["client"], e2e["env"]["MEDTUNE_HOME"]
    ran = [len(client.get_metric_history(run.info.run_id, "val/f1_macro")) for run in e2e["trials"]]
    finished = [run.data.metrics["val/f1_macro"] for run in e2e["trials"] if run.info.status == "FINISHED"]
    spent, best = script.spent_and_best(home, "e2e", "val/f1_macro", "max", 2, budget=1000)
    assert spent == sum(ran) and best == pytest.approx(max(finished))
    spent, best = script.spent_and_best(home, "e2e", "val/f1_macro", "max", 2, budget=0)
    assert spent == sum(ran) and math.isnan(best)  # no trial ended within no budget


@pytest.mark.slow  # two tune-run searches of two trials each, in their own processes (about a minute)
def test_each_setup_runs_a_real_search_per_seed(script, mlflow_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # the session's server: tune-run starts none
    monkeypatch.setattr(sys, "argv", ["bench_real_search.py", SPACE, "--setups", "random+fifo,random+asha",
                                      "--seeds", "1", "--num-samples", "2", "--budget", "4",
                                      "--set", "train/epochs=2", "--set", "data/fraction=0.25"])
    script.main()
    lines = capsys.readouterr().out.splitlines()
    assert "2 trials each, 2 epochs per trial, best final val/f1_macro within 4 trial-epochs" in lines[0]
    fifo, asha = (line.split() for line in lines[1:3])
    assert fifo[:4] == ["seed", "0", "random+fifo", "best"] and fifo[5] == "4"  # two trials ran both epochs
    assert asha[:4] == ["seed", "0", "random+asha", "best"] and asha[5] in ("3", "4")  # ASHA may stop one
    assert 0 <= float(fifo[4]) <= 1
    assert re.fullmatch(r"random\+fifo against random\+asha, seed for seed: higher [01], lower [01], same [01]; "
                        r"mean difference [+-]\d\.\d{4}; Wilcoxon p \S+", lines[-1])


def test_a_search_needs_seeds_trials_and_a_budget(script, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench_real_search.py", SPACE, "--seeds", "0", "--budget", "10"])
    with pytest.raises(SystemExit) as exit_:
        script.main()
    assert exit_.value.code == 2 and "--seeds 0, --num-samples 50, --budget 10: each takes" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["bench_real_search.py", SPACE, "--budget", "10", "--set", "train/epochs"])
    with pytest.raises(SystemExit) as exit_:
        script.main()
    assert exit_.value.code == 2 and "--set 'train/epochs' is not of the form key=value" in capsys.readouterr().err
