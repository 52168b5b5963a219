"""Learning curves of data/fraction and data/shots_per_class: a power law fitted to the error, bootstrapped over seeds.

error = a * n**(-b) + c, with error = 1 - metric for a metric to maximise (the metric itself for one to
minimise) and n the labelled training data (images, or shots per class). It is fitted to every run's
value with `scipy.optimize.curve_fit`; its uncertainty comes from `scipy.stats.bootstrap` over seeds
(whole seeds resampled with replacement, refitted; percentile interval), so the spread between seeds
is what the interval reflects. Resamples that cannot be refitted (a failed run leaves too few data
sizes) are left out of the percentiles; with more than 10% of them there is no interval.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

CURVE_FACTORS = ("data/fraction", "data/shots_per_class")
TRAIN_IMAGES = "data/train_images"  # a run's metric with its number of labelled training images, where logged
MAX_EXPONENT = 3.0  # b beyond this would mean the error vanishes faster than any learning curve seen in practice


@dataclass(frozen=True)
class PowerLaw:
    a: float
    b: float
    c: float

    def error(self, n):
        return self.a * np.asarray(n, dtype=float) ** -self.b + self.c


def fit_power_law(n, error) -> PowerLaw:
    """Least-squares fit of error = a * n**(-b) + c with a, c >= 0 and 0 <= b <= MAX_EXPONENT.

    n is scaled by its largest value for the fit (a then reads as the excess error there), which keeps
    the problem well conditioned whether n counts images or shots."""
    n, error = np.asarray(n, dtype=float), np.asarray(error, dtype=float)
    if len(np.unique(n)) < 3:
        raise ValueError(f"a power law of 3 parameters needs at least 3 distinct data sizes, got {sorted(set(map(float, n)))}")
    top = n.max()
    c0 = 0.5 * max(error.min(), 0.0)
    a0 = max(float(np.mean(error[n == top])) - c0, 1e-6)
    (a, b, c), _ = optimize.curve_fit(_law, n / top, error, p0=(a0, 0.5, c0), jac=_jacobian,
                                      bounds=([0.0, 0.0, 0.0], [np.inf, MAX_EXPONENT, np.inf]), max_nfev=10_000)
    return PowerLaw(float(a * top ** b), float(b), float(c))


def _law(x, a, b, c):
    return a * x ** -b + c


def _jacobian(x, a, b, c):
    power = x ** -b
    return np.stack([power, -a * power * np.log(x), np.ones_like(x)], axis=1)


@dataclass(frozen=True)
class LearningCurve:
    """The fit, and the predicted change of the metric when the data grows from `n` (the largest size) to 2n."""

    metric: str
    mode: str
    unit: str          # what n counts, e.g. "labelled training images"
    fit: PowerLaw
    n: float
    change: float
    low: float
    high: float

    def metric_at(self, n):
        """The metric the fit predicts at data size n."""
        error = self.fit.error(n)
        return 1.0 - error if self.mode == "max" else error

    def sentence(self) -> str:
        amount = "{:.0%}" if self.unit.startswith("of ") else "{:,.0f}"
        interval = f"[{self.low:+.4f}, {self.high:+.4f}]" if math.isfinite(self.low) else "not available"
        return (f"Doubling the labelled training data from {amount.format(self.n)} to {amount.format(2 * self.n)} "
                f"{self.unit} is predicted to change {self.metric} by {self.change:+.4f} (95% interval {interval}).")


def to_error(values, mode: str) -> np.ndarray:
    """The quantity the power law describes: 1 - metric for a metric to maximise, the metric to minimise."""
    values = np.asarray(values, dtype=float)
    return 1.0 - values if mode == "max" else values


def _doubling(fit: PowerLaw, n: float, mode: str) -> float:
    """The metric's change from n to 2n under the fit."""
    change = float(fit.error(2 * n) - fit.error(n))
    return -change if mode == "max" else change


def learning_curve(seeds, n, values, metric: str, mode: str, unit: str, resamples: int = 1000,
                   rng: int = 0) -> LearningCurve:
    """Fit the runs (seed index, data size n, metric value; NaN values are failed runs, left out) and
    bootstrap the doubling prediction over seeds."""
    seeds, n, values = (np.asarray(v, dtype=float) for v in (seeds, n, values))
    keep = np.isfinite(values)
    seeds, n, error = seeds[keep], n[keep], to_error(values[keep], mode)
    fit = fit_power_law(n, error)
    top = float(n.max())
    ids = np.unique(seeds)

    def statistic(chosen):
        rows = np.concatenate([np.flatnonzero(seeds == s) for s in chosen])
        try:
            return _doubling(fit_power_law(n[rows], error[rows]), top, mode)
        except (ValueError, RuntimeError):  # a resample with too few data sizes, or no convergence
            return math.nan

    low = high = math.nan
    if len(ids) >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # degenerate resamples (identical seeds) are part of the bootstrap
            spread = stats.bootstrap((ids,), statistic, vectorized=False, n_resamples=resamples, method="percentile",
                                     rng=rng).bootstrap_distribution
        if np.isfinite(spread).mean() >= 0.9:  # the percentile interval of the resamples that could be refitted
            low, high = np.nanpercentile(spread, [2.5, 97.5]).tolist()
    return LearningCurve(metric, mode, unit, fit, top, _doubling(fit, top, mode), low, high)
