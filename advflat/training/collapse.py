"""Collapse detection: a run whose model predicts (nearly) one class must not end looking normal.

A collapsed K-class classifier has a training loss of about ln K (uniform predictions) or a clean
error at chance, 1 − 1/K (one class predicted; a little less when that class is more frequent:
real MNIST collapsed at 88.5 % for K = 10). A run is flagged when, from epoch ``FIRST_EPOCH`` on
(or at the end of shorter runs), its training loss is within ``LOSS_TOLERANCE`` (relative) of
ln K or its clean error is at least 1 − 1/K − ``ERROR_MARGIN``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

FIRST_EPOCH = 3
LOSS_TOLERANCE = 0.03
ERROR_MARGIN = 0.02
# Which logged statistics are read, first present wins (robust training logs its robust loss).
LOSS_KEYS = ("train/robust_loss", "train/clean_loss")
ERROR_KEYS = ("test/clean_error", "train/clean_error")


def is_collapsed(loss: float | None, error: float | None, num_classes: int) -> bool:
    """Whether a training loss / clean error (either may be missing) says "collapsed"."""
    chance_loss = math.log(num_classes)
    near_chance_loss = loss is not None and abs(loss - chance_loss) <= LOSS_TOLERANCE * chance_loss
    chance_error = error is not None and error >= 1.0 - 1.0 / num_classes - ERROR_MARGIN
    return near_chance_loss or chance_error


def _first(stats: Mapping[str, float], keys: tuple[str, ...]) -> float | None:
    return next((float(stats[k]) for k in keys if k in stats), None)


class CollapseDetector:
    """Checks each epoch's logged statistics; ``collapsed`` is the verdict of the last check."""

    def __init__(self) -> None:
        self.collapsed = False

    def check(self, epoch: int, epochs: int, stats: Mapping[str, float], num_classes: int) -> bool:
        """Update and return the verdict (False before ``FIRST_EPOCH`` of longer runs)."""
        if epoch < min(FIRST_EPOCH, epochs):
            return False
        loss, error = _first(stats, LOSS_KEYS), _first(stats, ERROR_KEYS)
        self.collapsed = is_collapsed(loss, error, num_classes)
        return self.collapsed

    def diagnostics(self) -> dict[str, float]:
        """For metrics.json: ``diagnostics/collapsed`` 1 or 0."""
        return {"diagnostics/collapsed": float(self.collapsed)}

    @staticmethod
    def message(num_classes: int) -> str:
        return (
            f"the run looks COLLAPSED: training loss near ln {num_classes} = "
            f"{math.log(num_classes):.3f} or clean error at chance (one class predicted); "
            "lower the attack's epsilon or use trainer.epsilon_warmup_epochs"
        )
