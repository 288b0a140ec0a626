"""What one batch costs: the interface every training objective implements.

A loss turns a batch into (scalar loss, per-batch statistics) in two halves, which the update
rule calls in turn: ``inputs`` computes what the train-mode forward sees (adversarial examples,
in the attack's mode), ``on`` the loss from the outputs of ONE forward of those inputs. The
update runs that forward (``TrainingContext.train_forward``), so a rule can run it more than
once on the same inputs (AWP: at perturbed weights). The trainer
calls ``attach`` once with the configured input attack and ``prepare`` once per run. Statistics
are detached device tensors: the loop never waits for the GPU.

Both halves receive the same ``y``: labels (B,) or, under per-batch label noise, label pairs
(B, 2) (``advflat.training.labels``). ``inputs`` attacks ``true_labels(y)``; ``on`` trains on,
and measures its errors against, ``training_labels(y)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from advflat.attacks.base import Attack
from advflat.core.classification import classification_error
from advflat.core.configured import Configured
from advflat.data.base import ImageData, Split
from advflat.training.context import TrainingContext
from advflat.training.labels import BatchLabelNoise

Stats = dict[str, Tensor]


def split_stats(prefix: str, logits: Tensor, y: Tensor, loss: Tensor) -> Stats:
    """``{prefix}_loss`` and ``{prefix}_error`` of one part of a batch (detached)."""
    return {
        f"{prefix}_loss": loss.detach(),
        f"{prefix}_error": classification_error(logits.detach(), y),
    }


@dataclass(frozen=True)
class BatchPlan:
    """How the trainer draws one epoch: global batch size, whether the remainder is dropped,
    the run's data generator and the per-batch label noise (``advflat.training.labels``)."""

    batch_size: int
    drop_last: bool
    generator: torch.Generator
    label_noise: BatchLabelNoise

    def relabel(self, y: Tensor) -> Tensor:
        """A global batch's labels with this batch's label noise drawn (label pairs if τ > 0)."""
        return self.label_noise.draw(y, self.generator)

    def untouched(self, y: Tensor) -> Tensor:
        """Labels that take no label noise (pseudo-labels), in the format ``relabel`` gives."""
        return self.label_noise.untouched(y)

    def shuffled(self, data: ImageData, labels: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled training batches (x, relabelled y), before augmentation."""
        train = Split(data.train.x, labels)
        batches = train.batches(
            self.batch_size, shuffle=True, generator=self.generator, drop_last=self.drop_last
        )
        for x, y in batches:
            yield x, self.relabel(y)


class Loss(Configured):
    """Base class: clean inputs, no attack, the training module is the model."""

    def attach(self, attack: Attack | None) -> None:
        """Receive the configured input attack (once, when the trainer is built)."""

    def prepare(self, model: nn.Module, data: ImageData, device: torch.device) -> None:
        """Per-run set-up before the optimizer is built (heads, extra data)."""

    def training_module(self, model: nn.Module) -> nn.Module:
        """What the training forward runs and the optimizer updates."""
        return model

    def draw(
        self, plan: BatchPlan, data: ImageData, labels: Tensor
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of global batches before augmentation (semi-supervised mixes data in)."""
        return plan.shuffled(data, labels)

    def warm_up(self, scale: float) -> float | None:
        """Train against the attack at ``scale``·ε (and step size); returns the ε now used
        (None: this loss trains without an attack)."""
        return None

    def inputs(self, ctx: TrainingContext, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """What the train-mode forward sees (also used to recalibrate BN after EMA); an attack
        targets ``true_labels(y)``."""
        return x

    def on(self, ctx: TrainingContext, outputs: Any, y: Tensor) -> tuple[Tensor, Stats]:
        """The loss from ``outputs``, the training module's outputs for ``inputs`` (logits, or
        what a loss's training module returns), on the labels ``training_labels(y)``."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Plain containers and tensors a resumed run needs (``weights_only``-safe)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``'s values."""
