"""PNG plots for the report: flatness vs robustness scatter plots and curves over epochs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on clusters
import matplotlib.pyplot as plt  # noqa: E402

from advflat.report.collect import Run  # noqa: E402
from advflat.report.correlation import Correlation, correlate  # noqa: E402


def scatter_with_fit(runs: list[Run], x_key: str, y_key: str, path: Path) -> Correlation | None:
    points = [
        (r.metrics[x_key], r.metrics[y_key], r)
        for r in runs
        if x_key in r.metrics and y_key in r.metrics
    ]
    if not points:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    fit = correlate(xs, ys)
    figure, axes = plt.subplots(figsize=(5, 4))
    axes.scatter(xs, ys, s=18)
    if fit.n >= 3 and fit.slope == fit.slope:  # not NaN
        line = [min(xs), max(xs)]
        axes.plot(line, [fit.slope * v + fit.intercept for v in line], color="black", lw=1)
    axes.set(
        xlabel=x_key,
        ylabel=y_key,
        title=f"Pearson {fit.pearson:.2f}, Kendall {fit.kendall:.2f} (n={fit.n})",
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return fit


def curves_over_epochs(run: Run, keys: list[str], path: Path) -> bool:
    """One panel per metric present in the run's history (training logs and snapshot evals)."""
    series = {k: sorted((e, m[k]) for e, m in run.epochs.items() if k in m) for k in keys}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return False
    figure, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3.2), squeeze=False)
    for axis, (key, points) in zip(axes[0], series.items(), strict=True):
        axis.plot([e for e, _ in points], [v for _, v in points], marker=".")
        axis.set(xlabel="epoch", title=key)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
