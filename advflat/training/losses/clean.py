"""Normal training (Stutz et al.'s NormalTraining): cross-entropy on clean batches."""

from __future__ import annotations

from torch import Tensor

from advflat.training.context import TrainingContext
from advflat.training.labels import training_labels
from advflat.training.losses.base import Loss, Stats, split_stats


class CleanLoss(Loss):
    """CE on the clean batch; the configured attack only feeds the per-epoch test curves."""

    def on(self, ctx: TrainingContext, outputs: Tensor, y: Tensor) -> tuple[Tensor, Stats]:
        y = training_labels(y)
        loss = ctx.criterion(outputs, y)  # outputs: logits (B, K)
        return loss, split_stats("clean", outputs, y, loss)
