"""Which evaluation of a run a correlation uses: the final model, or the snapshot with the lowest
test robust loss (the paper's early-stopping view of robust overfitting)."""

from __future__ import annotations

from collections.abc import Callable

from advflat.report.collect import Run
from advflat.report.names import TEST_ROBUST_LOSS

Metrics = dict[str, float]


def final(run: Run) -> Metrics | None:
    return run.metrics


def best_test_robust_loss(run: Run) -> Metrics | None:
    """Among the evaluated snapshots and the final model, the lowest test robust loss."""
    candidates = [m for m in run.snapshots.values() if TEST_ROBUST_LOSS in m]
    if TEST_ROBUST_LOSS in run.metrics:
        candidates.append(run.metrics)
    if not candidates:
        return None
    return min(candidates, key=lambda metrics: metrics[TEST_ROBUST_LOSS])


SNAPSHOTS: dict[str, Callable[[Run], Metrics | None]] = {
    "final": final,
    "best_test_robust_loss": best_test_robust_loss,
}
