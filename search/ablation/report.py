"""The ablation report: per factor, level and metric on test (and validation) the spread over seeds, the paired
difference from the baseline with Holm-adjusted p-values, learning curves; as Markdown, CSV and charts.

The input is what the runs logged: one RunResult per run with the final values of its val/*, test/* and
perf/* metrics (an empty dict for a run that failed), tagged with its factor, level and seed index.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from search.ablation.figures import Chart, Panel, Trace, factor_words, write_chart
from search.ablation.grid import BASELINE, grid, is_baseline_level
from search.ablation.learning_curve import CURVE_FACTORS, TRAIN_IMAGES, LearningCurve, learning_curve
from search.ablation.spec import Ablation
from search.ablation.stats import WILCOXON_N, Paired, Summary, holm, paired, seed_warning, summarize
from trainables.registry import metric_words

NAN = math.nan


@dataclass(frozen=True)
class RunResult:
    """One run as read back from its tags (grid.Run.tags: the level is json.loads of its tag) and final metrics."""

    factor: str                  # a factor key, or grid.BASELINE
    level: Any                   # the factor's level; None for the baseline
    seed: int                    # seed index 0..K-1
    metrics: dict[str, float]    # final values of a finished run; {} for a failed one


@dataclass(frozen=True)
class Row:
    objective: str
    mode: str
    split: str                   # test | val (for a val/* objective), or the metric's group (perf)
    metric: str                  # the key read, e.g. test/f1_macro
    factor: str
    level: Any
    is_baseline: bool            # these are the baseline runs (the baseline itself, or a level equal to it)
    values: list[float]          # by seed index; NaN: failed or missing
    summary: Summary
    paired: Paired | None        # None for baseline runs


@dataclass(frozen=True)
class Curve:
    factor: str
    curve: LearningCurve
    seeds: list[int]
    n: list[float]
    values: list[float]


@dataclass(frozen=True)
class Analysis:
    ablation: Ablation
    rows: list[Row]
    curves: list[Curve]
    notes: list[str]             # warnings: few seeds, failed runs, learning curves that could not be fitted


def metric_keys(objective: str) -> list[tuple[str, str]]:
    """(split, key) pairs reported for an objective: a val/* objective on test and validation, others as they are."""
    group, _, name = objective.partition("/")
    return [("test", f"test/{name}"), ("val", objective)] if group == "val" else [(group, objective)]


def analyse(ablation: Ablation, results: list[RunResult], resamples: int = 1000) -> Analysis:
    """Every statistic of the report; `resamples`: bootstrap resamples of each learning curve."""
    runs = {(r.factor, json.dumps(r.level), r.seed): r.metrics for r in results}

    def values(factor: str, level: Any, metric: str) -> list[float]:
        if factor != BASELINE and is_baseline_level(ablation, factor, level):
            factor, level = BASELINE, None
        return [float(runs.get((factor, json.dumps(level), s), {}).get(metric, NAN)) for s in range(ablation.seeds)]

    rows, curves, notes = [], [], [w for w in [seed_warning(ablation.seeds)] if w]
    for objective, mode in ablation.objectives.items():
        for split, metric in metric_keys(objective):
            base = values(BASELINE, None, metric)
            family = [Row(objective, mode, split, metric, BASELINE, None, True, base, summarize(base), None)]
            for factor, levels in ablation.factors.items():
                for level in levels:
                    own, shared = values(factor, level, metric), is_baseline_level(ablation, factor, level)
                    compared = None if shared else paired(dict(enumerate(own)), dict(enumerate(base)))
                    family.append(Row(objective, mode, split, metric, factor, level, shared, own, summarize(own),
                                      compared))
            tested = [row for row in family if row.paired]
            adjusted = dict(zip(map(id, tested), holm([row.paired.p for row in tested])))
            rows += [replace(row, paired=replace(row.paired, holm=adjusted[id(row)])) if row.paired else row
                     for row in family]
            if split in ("test", "val"):
                for factor in (f for f in ablation.factors if f in CURVE_FACTORS):
                    fitted = _curve(ablation, factor, metric, mode, values, resamples)
                    (curves if isinstance(fitted, Curve) else notes).append(fitted)
    done = {key for key, metrics in runs.items() if metrics}
    failed = sum(1 for run in grid(ablation) if (run.factor, json.dumps(run.level), run.seed) not in done)
    if failed:
        notes.append(f"{failed} of {len(grid(ablation))} runs failed or did not finish; their values are left out "
                     f"(n counts the rest), and a pair needs both of its runs.")
    return Analysis(ablation, rows, curves, notes)


def _curve(ablation: Ablation, factor: str, metric: str, mode: str, values, resamples: int) -> Curve | str:
    """The learning curve of a data-size factor on one metric, or why there is none. A run's data size is its
    logged TRAIN_IMAGES (a failed run: the median of its level's others) where every level has it, else the
    level itself (a fraction, or shots per class)."""
    levels = list(dict.fromkeys([*ablation.factors[factor], ablation.baseline[factor]]))  # the baseline is a size too
    logged = {level: np.array(values(factor, level, TRAIN_IMAGES)) for level in levels}
    counted = all(np.isfinite(sizes).any() for sizes in logged.values())
    seeds, n, scores = [], [], []
    for level in levels:
        if counted or level > 0:  # shots 0 means "all images", not a size
            sizes = logged[level] if counted else np.full(ablation.seeds, float(level))
            seeds += list(range(ablation.seeds))
            n += np.where(np.isfinite(sizes), sizes, np.nanmedian(sizes)).tolist()
            scores += values(factor, level, metric)
    unit = ("labelled training images" if counted else
            "of the training split" if factor == "data/fraction" else "labelled images per class")
    try:
        curve = learning_curve(seeds, n, scores, metric, mode, unit, resamples)
    except (ValueError, RuntimeError) as exc:
        return f"No learning curve for {factor} on {metric}: {exc}."
    return Curve(factor, curve, seeds, n, scores)


def _num(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "-"


def _interval(low: float, high: float) -> str:
    return f"[{_num(low)}, {_num(high)}]" if math.isfinite(low) else "-"


def method(ablation: Ablation) -> str:
    """Which statistics the report uses and why."""
    split = ", data/split_seed + i: train/val redrawn, the test split never" if ablation.vary == "split" else ""
    return (
        f"Every level ran with the baseline's {ablation.seeds} seeds (seed i: train/seed + i{split}) and was evaluated "
        "once on the held-out test split. Mean ± SD: over seeds, SD with ddof=1. 95% CI: Student t-interval "
        "(scipy.stats.ttest_1samp), exact for normal scores and usable with a handful of seeds where a bootstrap "
        "is not. Δ: level minus baseline paired by seed, with the 95% interval and two-sided p of the paired "
        "t-test (scipy.stats.ttest_rel); pairing cancels what a seed does to both runs. Holm: p adjusted by Holm's "
        "step-down method over the comparisons of each metric (family-wise error 5%, valid under any dependence). "
        f"Wilcoxon: signed-rank p (scipy.stats.wilcoxon), a check that does not assume normal differences, "
        f"shown from {WILCOXON_N} seeds (with n pairs its smallest two-sided p is 2/2^n, above 0.05 for n <= 5). "
        "n: seeds with a value; intervals and tests need at least 3. Learning curves: error = a·n^(-b) + c "
        "(scipy.optimize.curve_fit), error = 1 - metric for a metric to maximise; 95% percentile interval of "
        "scipy.stats.bootstrap over whole seeds."
    )


def _cells(row: Row, wilcoxon: bool) -> list[str]:
    """One Markdown table row: level, mean ± SD, interval, then the comparison (blank for baseline runs), n."""
    s, p = row.summary, row.paired
    level = "" if row.factor == BASELINE else repr(row.level) + (" (baseline)" if row.is_baseline else "")
    compared = ["-"] * (4 if wilcoxon else 3)
    if p:
        difference = f"{p.diff:+.4g} {_interval(p.low, p.high)}" if math.isfinite(p.low) else _num(p.diff)
        compared = [difference, _num(p.p), _num(p.holm), *([_num(p.p_wilcoxon)] if wilcoxon else [])]
    n = f"{s.n}" + (f" ({s.failed} failed)" if s.failed else "")
    return [row.factor, level, f"{_num(s.mean)} ± {_num(s.sd)}", _interval(s.low, s.high), *compared, n]


def markdown(analysis: Analysis) -> str:
    ablation = analysis.ablation
    wilcoxon = ablation.seeds >= WILCOXON_N
    lines = [f"# Ablation of {ablation.source or 'the baseline'}", "",
             f"Trainable {ablation.trainable.name}; {ablation.seeds} seeds; seeds vary {ablation.vary}; baseline: "
             + ", ".join(f"{k}={ablation.baseline[k]!r}" for k in ablation.factors) + ".", "", method(ablation), ""]
    lines += [line for note in analysis.notes for line in (f"> **Warning.** {note}", "")]
    header = ["Factor", "Level", "Mean ± SD", "95% CI", "Δ vs baseline [95% CI]", "p (paired t)", "p (Holm)",
              *(["p (Wilcoxon)"] if wilcoxon else []), "n"]
    for metric in dict.fromkeys(row.metric for row in analysis.rows):
        rows = [row for row in analysis.rows if row.metric == metric]
        lines += [f"## {metric} ({rows[0].mode})", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_cells(row, wilcoxon)) + " |" for row in rows]
        lines.append("")
    if analysis.curves:
        lines += ["## Learning curves", "", *(f"- {c.curve.sentence()}" for c in analysis.curves)]
    return "\n".join(lines).rstrip() + "\n"


CSV_COLUMNS = ["objective", "mode", "split", "metric", "factor", "level", "baseline_runs", "n", "failed", "mean", "sd",
               "ci_low", "ci_high", "diff", "diff_ci_low", "diff_ci_high", "p_ttest_rel", "p_holm", "p_wilcoxon",
               "pairs", "pairs_dropped", "values_by_seed"]


def csv_text(analysis: Analysis) -> str:
    """One row per factor, level, objective and split; values_by_seed (JSON, null = failed) lets anyone recompute."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in analysis.rows:
        s, p = row.summary, row.paired
        compared = [p.diff, p.low, p.high, p.p, p.holm, p.p_wilcoxon, p.n, p.dropped] if p else [""] * 8
        seeds = json.dumps([v if math.isfinite(v) else None for v in row.values])
        writer.writerow([row.objective, row.mode, row.split, row.metric, row.factor,
                         "" if row.level is None else row.level, row.is_baseline, s.n, s.failed, s.mean, s.sd,
                         s.low, s.high, *compared, seeds])
    return out.getvalue()


def _errors(center: float, low: float, high: float) -> tuple[float, float]:
    return (center - low, high - center) if math.isfinite(low) else (0.0, 0.0)


def forest(analysis: Analysis) -> Chart:
    """Paired differences from the baseline with their 95% intervals: one panel per metric."""
    chart = Chart("forest", "Difference from the baseline, paired by seed (95% t-intervals)")
    for metric in dict.fromkeys(row.metric for row in analysis.rows):
        compared = [row for row in analysis.rows if row.metric == metric and row.paired]
        with_ci = [i for i, r in enumerate(compared) if math.isfinite(r.paired.low)]
        without = [i for i, r in enumerate(compared) if not math.isfinite(r.paired.low)]
        bars = [_errors(compared[i].paired.diff, compared[i].paired.low, compared[i].paired.high) for i in with_ci]
        traces = [Trace("mean difference (95% CI)", with_ci, [compared[i].paired.diff for i in with_ci],
                        [b[0] for b in bars], [b[1] for b in bars], horizontal=True)]
        if without:
            traces.append(Trace("mean difference (fewer than 3 pairs: no interval)", without,
                                [compared[i].paired.diff for i in without], horizontal=True))
        chart.panels.append(Panel(metric, f"difference in {metric_words(metric)}: level minus baseline",
                                  "factor = level", traces, [f"{r.factor} = {r.level!r}" for r in compared], zero=True))
    return chart


def _positions(levels: tuple) -> tuple[list[float], list[str] | None]:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in levels)
    return ([float(v) for v in levels], None) if numeric else (list(range(len(levels))), [str(v) for v in levels])


def level_charts(analysis: Analysis) -> list[Chart]:
    """Per factor: every seed's value at each level and the mean with its 95% interval, one panel per metric."""
    charts = []
    for factor, levels in analysis.ablation.factors.items():
        chart = Chart(f"levels-{factor.replace('/', '-')}", f"{factor_words(factor)}: every seed and the mean")
        positions, ticks = _positions(levels)
        for metric in dict.fromkeys(row.metric for row in analysis.rows):
            rows = [row for row in analysis.rows if row.metric == metric and row.factor == factor]
            seeds = Trace("each seed", [x for x, r in zip(positions, rows) for _ in r.values],
                          [v for r in rows for v in r.values])
            bars = [_errors(r.summary.mean, r.summary.low, r.summary.high) for r in rows]
            means = Trace("mean (95% CI)", positions, [r.summary.mean for r in rows], [b[0] for b in bars],
                          [b[1] for b in bars])
            base = next(r.summary.mean for r in analysis.rows if r.metric == metric and r.factor == BASELINE)
            reference = Trace(f"baseline mean ({factor} = {analysis.ablation.baseline[factor]!r})",
                              [min(positions), max(positions)], [base, base], line=True)
            chart.panels.append(Panel(metric, factor_words(factor), metric_words(metric), [seeds, means, reference],
                                      ticks))
        charts.append(chart)
    return charts


def curve_charts(analysis: Analysis) -> list[Chart]:
    """Per data-size factor: each seed's value against the data size and the fitted power law."""
    charts = []
    for factor in dict.fromkeys(c.factor for c in analysis.curves):
        chart = Chart(f"learning-curve-{factor.replace('/', '-')}", "Learning curve: fitted power law over seeds")
        for c in (c for c in analysis.curves if c.factor == factor):
            fit, sizes = c.curve.fit, np.geomspace(min(v for v in c.n if v > 0), 2 * c.curve.n, 60)
            line = Trace(f"a·n^(-b) + c: a={fit.a:.3g}, b={fit.b:.3g}, c={fit.c:.3g}", sizes.tolist(),
                         c.curve.metric_at(sizes).tolist(), line=True)
            minus, plus = _errors(c.curve.change, c.curve.low, c.curve.high)
            doubled = Trace("predicted at twice the data (95% CI)", [2 * c.curve.n],
                            [float(c.curve.metric_at(c.curve.n)) + c.curve.change], [minus], [plus])
            x_title = "labelled training images (count)" if c.curve.unit.endswith("images") else factor_words(factor)
            chart.panels.append(Panel(c.curve.metric, f"{x_title}, log scale", metric_words(c.curve.metric),
                                      [Trace("each seed", c.n, c.values), line, doubled], log_positions=True))
        charts.append(chart)
    return charts


def write_report(analysis: Analysis, folder: str) -> list[str]:
    """ablation.md, ablation.csv and every chart as HTML and PNG in folder; return the paths."""
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, "ablation.md"), os.path.join(folder, "ablation.csv")]
    for path, text in zip(paths, (markdown(analysis), csv_text(analysis))):
        with open(path, "w") as f:
            f.write(text)
    for chart in [forest(analysis), *level_charts(analysis), *curve_charts(analysis)]:
        paths += write_chart(chart, folder)
    return paths
