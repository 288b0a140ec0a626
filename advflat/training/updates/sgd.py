"""The plain update: the gradient of the loss at w, one step of the configured optimizer."""

from __future__ import annotations

from torch import Tensor, nn

from advflat.training.context import TrainingContext
from advflat.training.losses.base import Loss, Stats
from advflat.training.updates.base import Update


class OptimizerStep(Update):
    """``trainer/update=sgd``: backpropagate the loss, step the optimizer and the lr schedule
    (the optimizer itself is ``trainer/optimizer``: SGD or Adam)."""

    def step(
        self, ctx: TrainingContext, loss: Loss, model: nn.Module, x: Tensor, y: Tensor
    ) -> Stats:
        ctx.zero_grad()
        with ctx.autocast():
            inputs = loss.inputs(ctx, model, x, y)
            value, stats = loss.on(ctx, ctx.train_forward(inputs), y)
        value.backward()
        ctx.optimizer_step()
        return stats
