"""Linear fit and rank/linear correlations across models (the paper's Fig. 1/5-style plots)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Correlation:
    slope: float
    intercept: float
    pearson: float
    kendall: float
    n: int


def correlate(x: list[float], y: list[float]) -> Correlation:
    """Least-squares line y ≈ slope·x + intercept, Pearson's r and Kendall's τ (NaN if n < 3)."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    if len(xs) < 3 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return Correlation(math.nan, math.nan, math.nan, math.nan, len(xs))
    slope, intercept = np.polyfit(xs, ys, 1)
    return Correlation(
        float(slope),
        float(intercept),
        float(stats.pearsonr(xs, ys).statistic),
        float(stats.kendalltau(xs, ys).statistic),
        len(xs),
    )
