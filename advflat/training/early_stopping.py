"""Early stopping on the held-out robust error (Rice et al. 2020, "Overfitting in adversarially
robust deep learning"; docs/training.md#early-stopping).

After every epoch the model's robust error on the LAST ``last`` test images (paper: 500, PGD-7
with 5 restarts; disjoint from the first 1000 that the evaluation uses) is measured; the epoch
with the lowest error so far is written to ``checkpoints/best.pt`` beside ``last.pt``, and that
model is the one the run returns (and evaluates). The best error and epoch travel in ``last.pt``
(method state), so a resumed run compares against the best epoch before the restart.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from torch import nn

from advflat.attacks.base import Attack
from advflat.core import checks
from advflat.core.classification import batch_performance
from advflat.core.io import save_torch
from advflat.core.statistics import RunningMeans
from advflat.data.base import ImageData
from advflat.training import checkpoint
from advflat.training.run_directory import RunDirectory

log = logging.getLogger(__name__)

BEST = "best.pt"


class EarlyStopping:
    """Keep the epoch with the lowest held-out robust error (ties: the earlier epoch)."""

    def __init__(self, *, attack: Attack, last: int, batch_size: int = 500) -> None:
        if attack is None or not callable(attack):
            raise ValueError(f"attack must be an input attack, got {attack!r}")
        self.attack = attack
        self.last = checks.at_least("last", last, 1)
        self.batch_size = checks.at_least("batch_size", batch_size, 1)
        self.best_error = math.inf
        self.best_epoch = 0

    def heldout_performance(self, model: nn.Module, data: ImageData) -> dict[str, float]:
        """Clean and robust loss/error on the last ``last`` test images, in eval mode."""
        was_training = model.training
        model.eval()
        means = RunningMeans()
        for x, y in data.test.last(self.last).batches(self.batch_size):
            means.add(batch_performance(model, x, y, self.attack), len(y))
        model.train(was_training)
        return means.means()

    def update(
        self, model: nn.Module, data: ImageData, run: RunDirectory, epoch: int
    ) -> dict[str, float]:
        """Measure the held-out robust error; write best.pt when it is a new minimum."""
        performance = self.heldout_performance(model, data)
        error = performance["robust_error"]
        improved = error < self.best_error
        if improved:
            self.best_error, self.best_epoch = error, epoch
        if improved and run.writes:  # in a multi-process job, rank 0 writes
            save_torch(
                best_checkpoint(run),
                {
                    "format": checkpoint.FORMAT,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "model_config": run.model_config,
                    "config": run.config,  # so advflat-eval best.pt finds dataset and evaluation
                    "heldout_robust_error": error,
                },
            )
            log.info("epoch %d: new best held-out robust error %.4f", epoch, error)
        return {
            "heldout/clean_error": performance["clean_error"],
            "heldout/robust_loss": performance["robust_loss"],
            "heldout/robust_error": error,
            "heldout/best_robust_error": self.best_error,
            "heldout/best_epoch": float(self.best_epoch),
        }

    def restore_best(self, model: nn.Module, run: RunDirectory) -> None:
        """Load best.pt's weights into ``model`` (the early-stopped model)."""
        state = checkpoint.read(best_checkpoint(run), type(model))
        model.load_state_dict(state["model"])
        log.info(
            "early stopping: using epoch %d (held-out robust error %.4f)",
            state["epoch"],
            state["heldout_robust_error"],
        )

    def state_dict(self) -> dict[str, Any]:
        return {"best_error": self.best_error, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_error = float(state["best_error"])
        self.best_epoch = int(state["best_epoch"])


def best_checkpoint(run: RunDirectory) -> Path:
    return run.checkpoints / BEST
