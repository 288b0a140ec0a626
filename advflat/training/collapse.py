"""Collapse detection: a run whose model predicts (nearly) one class must not end looking normal.

A collapsed K-class classifier predicts (nearly) one class: its clean error is at chance,
1 − 1/K (a little less when that class is more frequent: real MNIST collapsed at 88.5 % for
K = 10), and its training loss is about ln K (uniform predictions). The rule, checked from epoch
``FIRST_EPOCH`` on (or at the end of shorter runs):

- the clean error (test, else train) decides when one is logged: collapsed when it is at least
  1 − 1/K − ``ERROR_MARGIN``;
- only a run that logs no clean error is judged by its training loss (clean, else robust):
  collapsed when it is within ``LOSS_TOLERANCE`` (relative) of ln K.

The robust loss does not decide when a clean error is there: early in adversarial training it
sits near ln K in ordinary runs (the digits quickstart after 2 epochs: a robust loss within 3 % of
ln 10 at a clean error of 45 %), while a model that has collapsed fails on clean inputs too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

FIRST_EPOCH = 3
LOSS_TOLERANCE = 0.03
ERROR_MARGIN = 0.02
# Which logged statistics are read, first present wins.
ERROR_KEYS = ("test/clean_error", "train/clean_error")
LOSS_KEYS = ("train/clean_loss", "train/robust_loss")


def is_collapsed(loss: float | None, error: float | None, num_classes: int) -> bool:
    """Whether a clean error, or without one a training loss, says "collapsed" (either may be
    missing; see the module docstring)."""
    if error is not None:
        return error >= 1.0 - 1.0 / num_classes - ERROR_MARGIN
    chance_loss = math.log(num_classes)
    return loss is not None and abs(loss - chance_loss) <= LOSS_TOLERANCE * chance_loss


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
            "the run looks COLLAPSED: clean error at chance, one class predicted (or, without a "
            f"clean error, training loss near ln {num_classes} = {math.log(num_classes):.3f}); "
            "lower the attack's epsilon, the lr or the weight decay, or use "
            "trainer.epsilon_warmup_epochs"
        )
