"""Ablation statistics and learning curves on inputs whose answers are known independently of SciPy."""
import math

import numpy as np
import pytest

from search.ablation.learning_curve import fit_power_law, learning_curve
from search.ablation.stats import holm, paired, seed_warning, summarize

T_975_DF4 = 2.776  # Student t table, two-sided 95%, 4 degrees of freedom


def test_interval_of_a_known_sample_matches_the_t_table():
    s = summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    half = T_975_DF4 * math.sqrt(2.5) / math.sqrt(5)  # sd (ddof=1) of 1..5 is sqrt(2.5)
    assert (s.n, s.failed, s.mean) == (5, 0, 3.0)
    assert s.sd == pytest.approx(math.sqrt(2.5))
    assert (s.low, s.high) == pytest.approx((3 - half, 3 + half), abs=1e-3)


def test_failed_runs_are_left_out_and_counted():
    s = summarize([1.0, math.nan, 2.0, 3.0])
    assert (s.n, s.failed, s.mean, s.sd) == (3, 1, 2.0, 1.0)
    few = summarize([1.0, 2.0, math.nan])
    assert (few.n, few.failed) == (2, 1) and math.isnan(few.low) and math.isnan(few.high)  # < 3 values: no interval
    assert summarize([math.nan]).n == 0


def test_a_consistent_improvement_is_positive_and_significant():
    base = [0.80, 0.82, 0.78, 0.81, 0.79]
    gain = [0.02, 0.03, 0.025, 0.02, 0.03]  # mean 0.025, sd 0.005: t = 0.025 / (0.005 / sqrt 5) = 11.18, 4 df
    p = paired(dict(enumerate(np.add(base, gain))), dict(enumerate(base)))
    half = T_975_DF4 * 0.005 / math.sqrt(5)
    assert (p.n, p.dropped) == (5, 0)
    assert p.diff == pytest.approx(0.025)
    assert (p.low, p.high) == pytest.approx((0.025 - half, 0.025 + half), abs=1e-4)
    assert p.p < 0.001  # the t table: t(0.9995, 4) = 8.61 < 11.18
    assert math.isnan(p.p_wilcoxon)  # 5 pairs: the signed-rank test cannot reach 0.05


def test_noise_around_zero_is_not_significant():
    base = [0.80, 0.82, 0.78, 0.81, 0.79]
    p = paired(dict(enumerate(np.add(base, [0.01, -0.01, 0.02, -0.02, 0.0]))), dict(enumerate(base)))
    assert p.diff == pytest.approx(0.0, abs=1e-12)
    assert p.low < 0 < p.high and p.p > 0.5


def test_a_worse_level_has_a_negative_difference():
    base = dict(enumerate([0.9, 0.91, 0.92, 0.9]))
    p = paired({s: v - 0.1 - 0.01 * s for s, v in base.items()}, base)
    assert p.diff < 0 and p.high < 0 and p.p < 0.05


def test_wilcoxon_from_six_pairs_is_the_exact_signed_rank_p():
    base = {s: 0.5 for s in range(6)}
    level = {s: 0.5 + 0.01 * (s + 1) for s in range(6)}  # all six differences positive
    assert paired(level, base).p_wilcoxon == pytest.approx(2 / 2 ** 6)


def test_a_failed_seed_drops_its_pair_and_is_counted():
    base = {0: 0.8, 1: 0.81, 2: 0.79, 3: 0.8, 4: 0.82}
    level = {0: 0.85, 1: 0.86, 2: math.nan, 3: 0.84}  # seed 2 failed, seed 4 never ran
    p = paired(level, base)
    assert (p.n, p.dropped) == (3, 2)
    assert p.diff == pytest.approx(np.mean([0.05, 0.05, 0.04]))
    two = paired({0: 0.9, 1: 0.9}, {0: 0.8, 1: 0.8, 2: 0.8})
    assert (two.n, two.dropped) == (2, 1) and two.diff == pytest.approx(0.1) and math.isnan(two.p)


def test_holm_matches_known_adjusted_p_values():
    # R: p.adjust(c(0.01, 0.04, 0.03, 0.005), "holm") = 0.03 0.06 0.06 0.02
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # R: p.adjust(c(0.2, 0.6, 0.01), "holm") = 0.4 0.6 0.03; NaN stays NaN, outside the family
    adjusted = holm([0.2, math.nan, 0.6, 0.01])
    assert math.isnan(adjusted[1])
    assert [adjusted[0], adjusted[2], adjusted[3]] == pytest.approx([0.4, 0.6, 0.03])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_seed_warnings():
    assert "no confidence interval" in seed_warning(2)
    assert "wide" in seed_warning(4) and "3.18" in seed_warning(4)  # t(0.975, 3) = 3.182
    assert seed_warning(5) is None


SIZES = np.array([100, 200, 400, 800, 1600, 3200])


def test_power_law_recovers_known_parameters():
    exact = fit_power_law(SIZES, 2.0 * SIZES ** -0.5 + 0.05)
    assert (exact.a, exact.b, exact.c) == pytest.approx((2.0, 0.5, 0.05), rel=1e-4)
    rng = np.random.default_rng(0)
    n = np.tile(SIZES, 5)
    noisy = fit_power_law(n, 3.0 * n ** -0.7 + 0.1 + rng.normal(0, 0.002, len(n)))
    assert noisy.b == pytest.approx(0.7, abs=0.1) and noisy.c == pytest.approx(0.1, abs=0.01)
    assert noisy.error(1000) == pytest.approx(3.0 * 1000 ** -0.7 + 0.1, abs=0.003)
    with pytest.raises(ValueError, match="3 distinct"):
        fit_power_law([1, 2, 1, 2], [0.3, 0.2, 0.3, 0.2])


def test_doubling_prediction_and_its_sentence():
    seeds = np.repeat(np.arange(4), len(SIZES))
    n = np.tile(SIZES, 4)
    f1 = 1 - (2.0 * n ** -0.5 + 0.05)  # error = 1 - F1 follows the law exactly
    curve = learning_curve(seeds, n, f1, "test/f1_macro", "max", "labelled training images", resamples=50)
    expected = 2.0 * 3200 ** -0.5 * (1 - 2 ** -0.5)  # err(N) - err(2N) at N = 3200
    assert curve.n == 3200 and curve.change == pytest.approx(expected, rel=1e-4)
    assert curve.low == pytest.approx(expected, rel=1e-3) and curve.high == pytest.approx(expected, rel=1e-3)
    assert curve.sentence() == (
        f"Doubling the labelled training data from 3,200 to 6,400 labelled training images is predicted to change "
        f"test/f1_macro by +{expected:.4f} (95% interval [+{curve.low:.4f}, +{curve.high:.4f}]).")


def test_noisy_seeds_give_an_interval_around_the_prediction_and_min_metrics_fall():
    rng = np.random.default_rng(3)
    fractions = np.array([0.25, 0.5, 0.75, 1.0])
    seeds, n = np.repeat(np.arange(5), 4), np.tile(fractions, 5)
    loss = 0.2 * n ** -0.5 + 0.3 + rng.normal(0, 0.005, len(n))
    loss[3] = math.nan  # a failed run is left out
    curve = learning_curve(seeds, n, loss, "test/loss", "min", "of the training split", resamples=100)
    assert curve.change < 0 and curve.low < curve.change < curve.high
    assert curve.change == pytest.approx(0.2 * (2 ** -0.5 - 1), abs=0.03)
    assert "from 100% to 200% of the training split" in curve.sentence()
