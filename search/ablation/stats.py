"""Statistics over seeds: t-intervals, paired differences from the baseline, Holm's correction (SciPy).

Runs of a level and of the baseline that share a seed index share train/seed (and, with vary
"split", the split), so their difference cancels what the seed does to both: the paired t-test
(`scipy.stats.ttest_rel`) and its interval use that. Intervals and tests need at least MIN_N
values: with two, the t quantile of one degree of freedom (12.7) makes any interval meaningless.
The Wilcoxon signed-rank test (`scipy.stats.wilcoxon`, exact) is added from WILCOXON_N pairs: with
n pairs its smallest two-sided p-value is 2 / 2**n, above 0.05 for n <= 5.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95
MIN_N = 3        # fewer values: no interval, no test
WIDE_N = 5       # fewer seeds: intervals are wide
WILCOXON_N = 6   # fewer pairs: the signed-rank test cannot reach p < 0.05
NAN = math.nan


@dataclass(frozen=True)
class Summary:
    """Mean, standard deviation (ddof=1) and 95% t-interval of the finite values; `failed` counts the rest."""

    n: int
    failed: int
    mean: float
    sd: float
    low: float
    high: float


@dataclass(frozen=True)
class Paired:
    """Level minus baseline, paired by seed: mean difference, its 95% t-interval and p-values.
    `dropped` counts the seeds without a finite value on both sides; `holm`: its p after `holm` over the family."""

    n: int
    dropped: int
    diff: float
    low: float
    high: float
    p: float
    p_wilcoxon: float
    holm: float = NAN


def _quiet(call):
    """SciPy's result on data with no spread (identical values) without its precision-loss warnings."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return call()


def summarize(values: list[float]) -> Summary:
    x = np.asarray(values, dtype=float)
    finite = x[np.isfinite(x)]
    n = len(finite)
    if n == 0:
        return Summary(0, len(x), NAN, NAN, NAN, NAN)
    sd = float(np.std(finite, ddof=1)) if n > 1 else NAN
    low = high = NAN
    if n >= MIN_N:
        low, high = _quiet(lambda: stats.ttest_1samp(finite, 0.0).confidence_interval(LEVEL))
    return Summary(n, len(x) - n, float(np.mean(finite)), sd, float(low), float(high))


def paired(level: dict[int, float], baseline: dict[int, float]) -> Paired:
    """The paired comparison of {seed: value} of a level with {seed: value} of the baseline."""
    seeds = sorted(set(level) | set(baseline))
    both = [s for s in seeds if np.isfinite(level.get(s, NAN)) and np.isfinite(baseline.get(s, NAN))]
    x = np.array([level[s] for s in both], dtype=float)
    y = np.array([baseline[s] for s in both], dtype=float)
    n, dropped = len(both), len(seeds) - len(both)
    if n < MIN_N:
        return Paired(n, dropped, float(np.mean(x - y)) if n else NAN, NAN, NAN, NAN, NAN)
    test = _quiet(lambda: stats.ttest_rel(x, y))
    low, high = _quiet(lambda: test.confidence_interval(LEVEL))
    p_wilcoxon = NAN
    if n >= WILCOXON_N and np.any(x != y):
        p_wilcoxon = float(_quiet(lambda: stats.wilcoxon(x, y).pvalue))
    return Paired(n, dropped, float(np.mean(x - y)), float(low), float(high), float(test.pvalue), p_wilcoxon)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (SciPy has only Benjamini-Hochberg/Yekutieli): the i-th smallest
    of m p-values times (m - i + 1), made non-decreasing, capped at 1. NaN p-values stay NaN, outside the family."""
    p = np.asarray(pvalues, dtype=float)
    tested = np.flatnonzero(np.isfinite(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    adjusted = np.full(len(p), NAN)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    return adjusted.tolist()


def seed_warning(seeds: int) -> str | None:
    """The caveat a report must carry for K seeds, or None."""
    if seeds < MIN_N:
        return (f"Only {seeds} seed(s): no confidence interval or test is computed (it needs at least {MIN_N}); "
                f"the numbers are single observations, not evidence of a difference.")
    if seeds < WIDE_N:
        return (f"Only {seeds} seeds: the 95% intervals are wide (t quantile {stats.t.ppf(0.975, seeds - 1):.2f} "
                f"with {seeds - 1} degrees of freedom); use {WIDE_N} or more seeds before drawing conclusions.")
    return None
