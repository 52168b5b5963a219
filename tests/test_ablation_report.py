"""The ablation report from known run results: table, CSV, learning curve and charts."""
import csv
import io
import json
import math

import numpy as np
import pytest

from search.ablation.grid import BASELINE, grid
from search.ablation.report import RunResult, analyse, csv_text, markdown, metric_keys, write_report
from search.ablation.spec import make_ablation
from tests.test_ablation_spec import DOC

ABLATION = make_ablation(DOC, {"data/fraction": [0.25, 0.5, 1.0], "model/frozen_layers": [0, 3]}, 3)
FAILED = ("data/fraction", 0.25, 2)


def f1(fraction: float, frozen: int, seed: int) -> float:
    """Error 0.1 * fraction^-0.5 (a power law), 0.01 better without freezing, a per-seed offset shared by all levels."""
    shift = {0: 0.01, 3: 0.002 * (seed % 2) - 0.001, 9: 0.0}[frozen]
    return 1 - 0.1 * fraction ** -0.5 + shift + 0.004 * seed + 0.001 * (seed * fraction) ** 2


def results() -> list[RunResult]:
    out = []
    for run in grid(ABLATION):
        if (run.factor, run.level, run.seed) == FAILED:
            out.append(RunResult(run.factor, run.level, run.seed, {}))
            continue
        score = f1(run.config["data/fraction"], run.config["model/frozen_layers"], run.seed)
        out.append(RunResult(run.factor, run.level, run.seed, {
            "val/f1_macro": score + 0.002, "test/f1_macro": score, "perf/train_images_per_s": 100.0 + run.seed}))
    return out


@pytest.fixture(scope="module")
def analysis():
    return analyse(ABLATION, results(), resamples=50)


def test_metric_keys_report_val_objectives_on_test_and_validation():
    assert metric_keys("val/f1_macro") == [("test", "test/f1_macro"), ("val", "val/f1_macro")]
    assert metric_keys("perf/train_images_per_s") == [("perf", "perf/train_images_per_s")]


def test_every_factor_level_and_split_has_a_row_with_its_seeds(analysis):
    keys = [(r.metric, r.factor, r.level) for r in analysis.rows]
    levels = [(BASELINE, None), ("data/fraction", 0.25), ("data/fraction", 0.5), ("data/fraction", 1.0),
              ("model/frozen_layers", 0), ("model/frozen_layers", 3)]
    assert keys == [(m, f, l) for m in ("test/f1_macro", "val/f1_macro", "perf/train_images_per_s") for f, l in levels]
    row = {(r.metric, r.factor, r.level): r for r in analysis.rows}
    base = row["test/f1_macro", BASELINE, None]
    assert base.values == [f1(1.0, 9, s) for s in range(3)] and base.summary.n == 3 and base.paired is None
    same = row["test/f1_macro", "data/fraction", 1.0]  # the baseline's own fraction: its runs, no comparison
    assert same.is_baseline and same.values == base.values and same.paired is None
    less = row["test/f1_macro", "data/fraction", 0.25]
    assert (less.summary.n, less.summary.failed, less.paired.n, less.paired.dropped) == (2, 1, 2, 1)
    half = row["test/f1_macro", "data/fraction", 0.5]
    assert half.paired.diff < 0 and half.paired.high < 0 and half.paired.holm >= half.paired.p
    unfrozen = row["test/f1_macro", "model/frozen_layers", 0]
    assert unfrozen.paired.diff == pytest.approx(0.01) and unfrozen.paired.low == pytest.approx(0.01)
    holm_family = [r.paired for r in analysis.rows if r.metric == "test/f1_macro" and r.paired]
    assert len(holm_family) == 4  # fraction 0.25 (2 pairs: no test), fraction 0.5, frozen 0, frozen 3
    assert math.isnan(holm_family[0].p) and math.isnan(holm_family[0].holm)
    assert holm_family[3].p > 0.5 and holm_family[3].holm == pytest.approx(holm_family[3].p)  # largest p: times 1


def test_csv_means_are_the_means_of_the_runs_values(analysis):
    rows = list(csv.DictReader(io.StringIO(csv_text(analysis))))
    assert len(rows) == len(analysis.rows) == 18
    logged = {(r.factor, r.level, r.seed): r.metrics for r in results()}
    for row in rows:
        seeds = json.loads(row["values_by_seed"])
        finite = [v for v in seeds if v is not None]
        assert float(row["mean"]) == pytest.approx(np.mean(finite)) and int(row["n"]) == len(finite)
        if row["factor"] != BASELINE and row["baseline_runs"] == "False":
            level = json.loads(row["level"]) if row["factor"] != "data/normalize" else row["level"]
            runs = [logged[row["factor"], level, s].get(row["metric"]) for s in range(3)]
            assert float(row["mean"]) == pytest.approx(np.mean([v for v in runs if v is not None]))
            assert row["p_holm"] != "" and row["diff_ci_low"] != ""


def test_markdown_states_the_method_and_warns(analysis):
    text = markdown(analysis)
    assert "scipy.stats.ttest_rel" in text and "Holm" in text and "Student t-interval" in text
    assert "Only 3 seeds: the 95% intervals are wide" in text
    assert "1 of 15 runs failed or did not finish" in text
    assert "| data/fraction | 1.0 (baseline) |" in text and "| baseline |  |" in text
    assert "| data/fraction | 0.25 | " in text and "| 2 (1 failed) |" in text
    assert "p (Wilcoxon)" not in text  # 3 seeds: the signed-rank test cannot reach 0.05
    assert "Doubling the labelled training data from 100% to 200% of the training split" in text


def test_learning_curve_of_the_fraction_factor(analysis):
    assert [(c.factor, c.curve.metric) for c in analysis.curves] == [
        ("data/fraction", "test/f1_macro"), ("data/fraction", "val/f1_macro")]
    curve = analysis.curves[0].curve
    assert curve.unit == "of the training split" and curve.n == 1.0
    assert curve.change > 0 and curve.fit.b == pytest.approx(0.5, abs=0.15)


def test_training_set_sizes_are_used_where_the_runs_log_them():
    sized = [RunResult(r.factor, r.level, r.seed, {**r.metrics, "data/train_images": 800 * (
        r.level if r.factor == "data/fraction" else 1.0)}) for r in results() if r.metrics]
    curve = analyse(ABLATION, sized, resamples=20).curves[0].curve
    assert curve.unit == "labelled training images" and curve.n == 800
    assert "from 800 to 1,600 labelled training images" in curve.sentence()


def test_report_files(tmp_path):
    small = make_ablation({**DOC, "objectives": {"val/f1_macro": "max"}}, {"data/fraction": [0.25, 0.5, 1.0]}, 3)
    paths = write_report(analyse(small, results(), resamples=20), str(tmp_path))
    names = sorted(p.rsplit("/", 1)[1] for p in paths)
    assert names == sorted(["ablation.md", "ablation.csv"] + [f"{stem}.{ext}" for ext in ("html", "png") for stem in (
        "forest", "levels-data-fraction", "learning-curve-data-fraction")])
    for path in paths:
        with open(path, "rb") as f:
            head = f.read(8)
        assert head.startswith(b"\x89PNG") if path.endswith(".png") else len(head) == 8
    html = (tmp_path / "forest.html").read_text()
    assert "difference in test macro F1 (0-1): level minus baseline" in html and "factor = level" in html
    assert "fraction of the training split used, log scale" in (tmp_path / "learning-curve-data-fraction.html").read_text()
