"""scripts/bench_real_search.py: real `tune-run` searches, read back from Ray Tune's state in the order their
trials were made."""
import math
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACE = os.path.join(ROOT, "benchmarks", "classification_space.py")
TABLE = os.path.join(ROOT, "benchmarks", "classification_table_32px.json")


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
    search = script.read_search(home, "e2e", "val/f1_macro", "max", 2, budget=1000, target=max(finished))
    assert search.spent == sum(ran) and search.best == pytest.approx(max(finished))
    assert sorted(search.finals) == pytest.approx(sorted(finished))
    assert 2 <= search.to_target <= sum(ran)  # the best trial reached it, having run its 2 epochs
    search = script.read_search(home, "e2e", "val/f1_macro", "max", 2, budget=0, target=max(finished) + 1)
    assert search.spent == sum(ran) and math.isnan(search.best)  # no trial ended within no budget
    assert search.to_target is None  # nor reached a target above the best


def test_random_search_needs_the_median_of_a_geometric_number_of_draws(script):
    assert script.random_search_median(2, 2, 4)[0] == 4  # every draw hits: the first trial's 4 epochs
    assert script.random_search_median(1, 2, 4)[0] == 4  # p = 1/2: half the searches hit with the first draw
    assert script.random_search_median(1, 10, 4)[0] == 4 * 7  # 1 - 0.9^7 = 0.52, 1 - 0.9^6 = 0.47
    estimate, low, high = script.random_search_median(3, 100, 4)
    assert low < estimate < high and estimate == 4 * 23  # 1 - 0.97^23 = 0.504
    never = script.random_search_median(0, 100, 4)
    assert never[0] == math.inf and never[2] == math.inf and never[1] < math.inf  # p may still be up to 3.6%


def test_seeds_that_differ_in_their_share_of_hits_make_random_search_slower(script):
    alike = script.seed_varying_median([1] * 20, [100] * 20, 4, resamples=99)
    assert alike[0] == script.random_search_median(20, 2_000, 4)[0] and alike[3] > 0.4  # one share fits as well
    estimate, low, high, p = script.seed_varying_median([0] * 10 + [10] * 10, [100] * 20, 4, resamples=99)
    assert p < 1e-6 and low < estimate < high  # half the seeds never hit: a beta-binomial, not one share
    assert estimate > 2 * script.random_search_median(100, 2_000, 4)[0]  # a median seed is slower than the pool
    assert script.seed_varying_median([0, 0, 0], [50] * 3, 4) == (math.inf, math.inf, math.inf, 1.0)


@pytest.mark.slow  # two tune-run searches of two trials each, in their own processes (about a minute)
def test_each_setup_runs_a_real_search_per_seed(script, mlflow_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # the session's server: tune-run starts none
    argv = ["bench_real_search.py", SPACE, "--setups", "random+fifo,random+asha", "--seeds", "1", "--num-samples",
            "2", "--budget", "4", "--set", "train/epochs=2", "--set", "data/fraction=0.25", "--table", TABLE]
    monkeypatch.setattr(sys, "argv", argv)
    script.main()
    lines = capsys.readouterr().out.splitlines()
    assert "2 trials each, 2 epochs per trial, best final val/f1_macro within 4 trial-epochs, target 0.9750" in lines[0]
    fifo, asha = (line.split() for line in lines[1:3])
    assert fifo[:4] == ["seed", "0", "random+fifo", "best"] and fifo[5] == "4"  # two trials ran both epochs
    assert asha[:4] == ["seed", "0", "random+asha", "best"] and asha[5] in ("3", "4")  # ASHA may stop one
    assert 0 <= float(fifo[4]) <= 1 and fifo[9:11] == ["to", "target"] and fifo[11] in ("-", "2", "4")
    assert re.fullmatch(r"random\+fifo against random\+asha, seed for seed: higher [01], lower [01], same [01]; "
                        r"mean difference [+-]\d\.\d{4}; Wilcoxon p \S+", lines[5])
    assert re.fullmatch(r"random \+ FIFO's finished trials reaching the target: [012] of 2: .*", lines[6])
    assert lines[7].startswith("random+fifo    to target: found ") and "against random search's median" in lines[7]
    assert re.fullmatch(r"random\+asha    hypervolume share within 4 trial-epochs: median \d\.\d{3} "
                        r"\(quartiles \d\.\d{3}-\d\.\d{3}\)", lines[10])
    assert lines[11].startswith("random+fifo against random+asha, hypervolume share seed for seed: higher ")
    monkeypatch.setattr(sys, "argv", argv + ["--reuse"])  # the same again: the searches are read back, not rerun
    script.main()
    again = capsys.readouterr().out.splitlines()
    assert "(read back: real-random-fifo-0-" in again[1] and "(read back: real-random-asha-0-" in again[2]
    assert again[1].split()[:12] == fifo[:12] and again[5:] == lines[5:]
    saved = {"sampler": "random", "scheduler": "fifo", "seed": 0, "num_samples": 2, "smoke_test": False,
             "overrides": {"train/epochs": 2, "data/fraction": 0.25}}
    home = str(tmp_path / "home")
    assert script.finished_name(home, "real-random-fifo-0", saved) == again[1].split("(read back: ")[1][:-1]
    for other in ({"num_samples": 3}, {"overrides": {"train/epochs": 2}}, {"smoke_test": True}):
        assert script.finished_name(home, "real-random-fifo-0", {**saved, **other}) is None  # not the same search


def test_a_search_needs_seeds_trials_and_a_budget(script, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench_real_search.py", SPACE, "--seeds", "0", "--budget", "10"])
    with pytest.raises(SystemExit) as exit_:
        script.main()
    assert exit_.value.code == 2 and "--seeds 0, --num-samples 50, --budget 10: each takes" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["bench_real_search.py", SPACE, "--budget", "10", "--table", SPACE])
    with pytest.raises(SystemExit) as exit_:
        script.main()
    assert exit_.value.code == 2 and f"--table {SPACE}: not a tabular benchmark" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["bench_real_search.py", SPACE, "--budget", "10", "--set", "train/epochs"])
    with pytest.raises(SystemExit) as exit_:
        script.main()
    assert exit_.value.code == 2 and "--set 'train/epochs' is not of the form key=value" in capsys.readouterr().err


def test_a_front_is_measured_as_the_replay_measures_the_tables(script, monkeypatch):
    import json

    monkeypatch.syspath_prepend(os.path.join(ROOT, "scripts"))
    from bench_tabular_replay import Table

    with open(TABLE) as f:
        table = Table(json.load(f), "flops")
    rows = [(row["curves"]["val/f1_macro"][-1], {**table.constants, **row["params"]}) for row in table.rows]
    best = max(rows, key=lambda row: row[0])  # the table's front: test_byobnet, its fastest model, is also best
    slower = max((row for row in rows if row[1]["model/backbone"] == "test_vit"), key=lambda row: row[0])
    worst = (min(row[0] for row in rows) - 0.1, best[1])  # below every row: adds nothing
    searches = [script.Search(0, 0.0, within, [], None) for within in (rows, [best], [slower], [worst], [])]
    every, front, one, below, none = script.front_shares(searches, table, "classification")
    assert every == pytest.approx(1.0) and front == pytest.approx(1.0)  # FLOPs counted as the table counts them
    assert 0 < one < 1 and below == 0 and none == 0
