"""The paper's robust-overfitting figure, per method: train and test robust loss (left axis) and
average-case robust flatness (right axis) over the training epochs, averaged over seeds.

Losses come from the training log (history.json: every epoch, the training attack on a few test
batches) and, as markers, from the evaluated snapshots (advflat-eval --all: the evaluation's PGD);
flatness only from the evaluated snapshots.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advflat.report.collect import Run
from advflat.report.plots import plt, save

FLATNESS = "flatness/average/robust"
# (legend, snapshot key, training-log key)
LOSSES = (
    ("train robust loss", "train/robust_loss/pgd", "train/robust_loss"),
    ("test robust loss", "test/robust_loss/pgd", "test/robust_loss"),
)
Series = list[tuple[int, float]]


def averaged(runs: list[Run], key: str, source: str) -> Series:
    """Mean over the runs (seeds) of ``key`` at every epoch some run has it."""
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for epoch, values in getattr(run, source).items():
            if key in values:
                by_epoch.setdefault(epoch, []).append(values[key])
    return sorted((epoch, statistics.fmean(v)) for epoch, v in by_epoch.items())


def loss_series(runs: list[Run]) -> dict[str, tuple[Series, dict[str, Any]]]:
    """Each robust loss from the training log (every epoch, thin) and from the evaluated
    snapshots (markers), with the line style that tells them apart."""
    found: dict[str, tuple[Series, dict[str, Any]]] = {}
    for index, (name, snapshot_key, history_key) in enumerate(LOSSES):
        if logged := averaged(runs, history_key, "history"):
            found[f"{name} (training log)"] = logged, {"color": f"C{index}", "lw": 1, "alpha": 0.6}
        if evaluated := averaged(runs, snapshot_key, "snapshots"):
            found[f"{name} (evaluated snapshots)"] = (
                evaluated,
                {"color": f"C{index}", "marker": "o"},
            )
    return found


@dataclass(frozen=True)
class Caption:
    title: str  # the method, and ε
    flatness_label: str  # the right axis, with ξ


def over_epochs_plot(runs: list[Run], caption: Caption, path: Path) -> bool:
    """False (nothing drawn) when the runs have neither losses nor flatness over epochs."""
    losses, flatness = loss_series(runs), averaged(runs, FLATNESS, "snapshots")
    if not losses and not flatness:
        return False
    figure, left = plt.subplots(figsize=(7.5, 4.5))
    for name, (points, style) in losses.items():
        left.plot(*zip(*points, strict=True), label=name, **style)
    left.set_xlabel("epoch")
    left.set_ylabel("robust loss (cross-entropy, nats)")
    handles, labels = left.get_legend_handles_labels()
    if flatness:
        right = left.twinx()
        right.plot(*zip(*flatness, strict=True), color="C3", marker="s", ls="--",
                   label="average-case robust flatness")  # fmt: skip
        right.set_ylabel(caption.flatness_label, color="C3")
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    seeds = f"mean over {len(runs)} seeds" if len(runs) > 1 else "1 seed"
    left.set_title(f"{caption.title} ({seeds})", fontsize=10)
    left.grid(alpha=0.3)
    # Below the axes: inside, it hides the curves it explains.
    left.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13),
                ncol=3, frameon=False)  # fmt: skip
    save(figure, path)
    return True
