"""How the weights move: the interface every update rule implements, and the plain step.

An update rule takes one (group of) batch(es) and a ``Loss`` and moves the weights through the
context's optimizer. ``attach`` receives the top-level ``weight_attack`` once, when the trainer
is built: a rule that does not use it refuses anything but ``weight_attack=none``, so no
configured object is silently ignored.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import Tensor, nn

from advflat.core.configured import Configured
from advflat.core.errors import ConfigError
from advflat.training.context import TrainingContext
from advflat.training.losses.base import Loss, Stats
from advflat.weights import WeightAttack

Batches = Iterator[tuple[Tensor, Tensor]]


class Update(Configured):
    """Base class: one batch per step, the training forward under DDP, no weight attack."""

    # Whether the training forward runs under DDP (rules that average gradients by hand: no).
    data_parallel = True

    def attach(self, weight_attack: WeightAttack | None) -> None:
        if weight_attack:  # NoWeightAttack is falsy
            raise ConfigError(
                f"weight_attack ({type(weight_attack).__name__}) is only used by "
                "trainer/update=awp: set weight_attack=none or choose trainer/update=awp"
            )

    def prepare(self) -> None:
        """Per-run reset of the rule's state."""

    # How many passes over the training data one epoch's steps draw on.
    passes_per_epoch = 1

    def steps(self, batches: Batches) -> Batches:
        """The epoch's steps from its batches: one batch each (Entropy-SGD groups several)."""
        return batches

    def step(
        self, ctx: TrainingContext, loss: Loss, model: nn.Module, x: Tensor, y: Tensor
    ) -> Stats:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Plain containers a resumed run needs (``weights_only``-safe)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``'s values."""
