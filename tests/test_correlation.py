"""Correlations across models: known answers, scipy's own values, bootstrap intervals."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from advflat.report.correlation import correlate

# A small, non-monotone set (flatness, test robust loss) of six models.
X = [0.1, 0.5, 0.2, 0.9, 0.4, 0.3]
Y = [1.0, 1.9, 1.4, 2.2, 1.2, 1.5]


def test_a_perfect_line_has_pearson_and_spearman_one_and_its_slope():
    fit = correlate([1, 2, 3, 4, 5], [3, 5, 7, 9, 11])
    assert fit is not None
    assert (fit.pearson, fit.spearman, fit.slope, fit.intercept) == pytest.approx((1, 1, 2, 1))
    assert fit.pearson_ci == pytest.approx((1, 1)) and fit.spearman_ci == pytest.approx((1, 1))
    falling = correlate([1, 2, 3, 4], [4, 3, 2, 1])
    assert falling is not None and falling.pearson == pytest.approx(-1)


def test_coefficients_and_p_value_equal_scipys_on_a_small_set():
    fit = correlate(X, Y)
    assert fit is not None and fit.n == 6
    assert fit.pearson == pytest.approx(stats.pearsonr(X, Y).statistic)
    assert fit.p_value == pytest.approx(stats.pearsonr(X, Y).pvalue)
    assert fit.spearman == pytest.approx(stats.spearmanr(X, Y).statistic)
    assert fit.spearman == pytest.approx(0.8285714, rel=1e-6)  # 1 − 6·Σd²/(n(n²−1)), Σd² = 6


def test_bootstrap_intervals_contain_the_estimate_and_are_reproducible():
    fit, again = correlate(X, Y), correlate(X, Y)
    assert fit is not None and again is not None
    for estimate, (low, high) in [(fit.pearson, fit.pearson_ci), (fit.spearman, fit.spearman_ci)]:
        assert -1 <= low <= estimate <= high <= 1
        assert high - low > 0.05  # six noisy models: not a degenerate interval
    assert (fit.pearson_ci, fit.spearman_ci) == (again.pearson_ci, again.spearman_ci)


def test_three_models_still_get_a_finite_interval_though_some_resamples_repeat_one_model():
    fit = correlate([1.0, 2.0, 3.0], [2.0, 4.0, 7.0])
    assert fit is not None and fit.n == 3
    assert all(math.isfinite(v) for v in (*fit.pearson_ci, *fit.spearman_ci))


def test_n_counts_only_models_with_both_values():
    fit = correlate([*X, math.nan, 1.0], [*Y, 2.0, math.inf])
    assert fit is not None and fit.n == 6
    assert fit.pearson == pytest.approx(stats.pearsonr(X, Y).statistic)


def test_fewer_than_three_models_or_a_constant_axis_give_no_correlation():
    assert correlate([1.0, 2.0], [1.0, 2.0]) is None
    assert correlate([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None
