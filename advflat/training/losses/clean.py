"""Normal training (Stutz et al.'s NormalTraining): cross-entropy on clean batches."""

from __future__ import annotations

from torch import Tensor, nn

from advflat.training.context import TrainingContext
from advflat.training.labels import training_labels
from advflat.training.losses.base import Forward, Loss, Stats, split_stats


class CleanLoss(Loss):
    """CE on the clean batch; the configured attack only feeds the per-epoch test curves."""

    def on(
        self, ctx: TrainingContext, model: nn.Module, inputs: Tensor, y: Tensor, forward: Forward
    ) -> tuple[Tensor, Stats]:
        logits = forward(inputs)  # (B, K)
        y = training_labels(y)
        loss = ctx.criterion(logits, y)
        return loss, split_stats("clean", logits, y, loss)

    def __repr__(self) -> str:
        return "CleanLoss()"
