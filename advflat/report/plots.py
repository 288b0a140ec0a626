"""Shared plotting setup (matplotlib, files only) and the per-run curves ``advflat-eval`` draws."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on clusters
import matplotlib.pyplot as plt  # noqa: E402

from advflat.report.collect import Run  # noqa: E402


def epsilon_text(epsilon: float | None) -> str:
    """ε as the paper writes it: 8/255 rather than 0.0314 when it is a whole number of levels."""
    if epsilon is None:
        return "ε = ?"
    levels = epsilon * 255
    return f"ε = {round(levels)}/255" if abs(levels - round(levels)) < 1e-6 else f"ε = {epsilon:g}"


def save(figure: plt.Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120, bbox_inches="tight")  # legends outside the axes included
    plt.close(figure)


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
    save(figure, path)
    return True
