"""How strongly flatness and robust generalization go together across models (the paper's Fig. 1
and 5): Pearson's r and Spearman's ρ with 95 % bootstrap intervals over the models, and the
least-squares line drawn in the scatter plots.

The bootstrap resamples models with replacement (scipy.stats.bootstrap, paired, fixed seed).
With few models some resamples repeat one model only and have no correlation (NaN); the
interval is then the percentiles of the resamples that have one.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats

MIN_MODELS = 3
CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0


@dataclass(frozen=True)
class Correlation:
    n: int
    pearson: float
    pearson_ci: tuple[float, float]
    spearman: float
    spearman_ci: tuple[float, float]
    p_value: float  # Pearson's test of r = 0
    slope: float
    intercept: float


def _pearson(x: NDArray[np.float64], y: NDArray[np.float64], axis: int = -1) -> NDArray:
    return np.asarray(stats.pearsonr(x, y, axis=axis).statistic)


def _spearman(x: NDArray[np.float64], y: NDArray[np.float64], axis: int = -1) -> NDArray:
    # Spearman's ρ is Pearson's r of the (tie-averaged) ranks; this form takes a batch axis.
    return _pearson(stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis), axis=axis)


def bootstrap_interval(
    x: NDArray[np.float64], y: NDArray[np.float64], statistic: object
) -> tuple[float, float]:
    result = stats.bootstrap(
        (x, y),
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(SEED),
    )
    low, high = result.confidence_interval
    if math.isfinite(low) and math.isfinite(high):
        return float(low), float(high)
    tails = 100 * np.array([(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    low, high = np.nanpercentile(result.bootstrap_distribution, tails)
    return float(low), float(high)


def finite_pairs(x: list[float], y: list[float]) -> tuple[NDArray, NDArray]:
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    return xs[keep], ys[keep]


def correlate(x: list[float], y: list[float]) -> Correlation | None:
    """The correlation of paired values, or None with fewer than 3 models or a constant axis."""
    xs, ys = finite_pairs(x, y)
    if len(xs) < MIN_MODELS or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return None
    with warnings.catch_warnings():
        # Resamples of a single repeated model: their NaN is expected, see the module docstring.
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", getattr(stats, "DegenerateDataWarning", RuntimeWarning))
        pearson = stats.pearsonr(xs, ys)
        spearman = stats.spearmanr(xs, ys)
        fit = stats.linregress(xs, ys)
        return Correlation(
            n=len(xs),
            pearson=float(pearson.statistic),
            pearson_ci=bootstrap_interval(xs, ys, _pearson),
            spearman=float(spearman.statistic),
            spearman_ci=bootstrap_interval(xs, ys, _spearman),
            p_value=float(pearson.pvalue),
            slope=float(fit.slope),
            intercept=float(fit.intercept),
        )
