"""The losses several metrics compare against, computed once per evaluated model.

The PGD-20×10 robust loss on the first 1000 test images is the ``pgd`` metric and also the
reference L(w) of the average- and worst-case robust flatness; computing it three times was a
third of a snapshot's evaluation. Likewise the clean L(w) of the first 1000 test images is the
reference of both clean flatness measures. ``SharedReferences`` (one per evaluated model, handed
to every metric by the evaluation) keeps them keyed by everything that determines them: split,
first N, batch size and, for the robust loss, the attack's full configuration (its repr lists
every constructor argument). Metrics that differ in any of these compute their own.

Each shared computation draws from its own random stream, derived from the run seed and the key,
so its value does not depend on which metric asked first nor on which metrics are switched on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from advflat.attacks.base import Attack
from advflat.core.classification import adversarial_logits
from advflat.data.base import ImageData, Split, select
from advflat.evaluation.flatness_losses import set_loss_value
from advflat.evaluation.seeds import seeded_stream


@dataclass(frozen=True)
class RobustLosses:
    """Per-example cross-entropy (N,) and misclassification (N,) at the adversarial inputs."""

    loss: Tensor
    error: Tensor

    def mean_loss(self) -> float:
        return self.loss.double().mean().item()

    def mean_error(self) -> float:
        return self.error.double().mean().item()


def robust_losses(
    model: nn.Module, examples: Split, attack: Attack, batch_size: int
) -> RobustLosses:
    """Attack every example (``batch_size`` at a time, as the training loop's robust curves do,
    ``advflat.core.classification``); losses stay on the device until read."""
    losses, errors = [], []
    for x, y in examples.batches(batch_size):
        attacked = adversarial_logits(model, x, y, attack)
        losses.append(attacked.losses())
        errors.append(attacked.errors())
    return RobustLosses(torch.cat(losses), torch.cat(errors))


def reference_key(split: str, first: int | None, batch_size: int, attack: Attack) -> str:
    return f"robust_losses/{split}/first={first}/batch_size={batch_size}/{attack!r}"


def clean_key(split: str, first: int | None, batch_size: int) -> str:
    return f"clean_loss/{split}/first={first}/batch_size={batch_size}"


class SharedReferences:
    """Results shared by the metrics of one evaluated model; ``computed`` counts the references
    computed (robust ones are attack runs), each once however many metrics read it."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.computed = 0
        self._robust: dict[str, RobustLosses] = {}
        self._clean: dict[str, float] = {}

    def robust_losses(
        self,
        model: nn.Module,
        data: ImageData,
        *,
        split: str,
        first: int | None,
        batch_size: int,
        attack: Attack,
    ) -> RobustLosses:
        key = reference_key(split, first, batch_size, attack)
        if key not in self._robust:
            device = next(model.parameters()).device
            with seeded_stream(self.seed, key, device):
                examples = select(data, split, first)
                self._robust[key] = robust_losses(model, examples, attack, batch_size)
            self.computed += 1
        return self._robust[key]

    def clean_loss(
        self, model: nn.Module, data: ImageData, *, split: str, first: int | None, batch_size: int
    ) -> float:
        """The clean L(w) of the clean flatness measures: the mean CE over the examples,
        ``batch_size`` at a time, as ``measure_flatness`` takes it."""
        key = clean_key(split, first, batch_size)
        if key not in self._clean:
            # An eval-mode forward draws nothing; its own stream keeps that so for any model.
            with seeded_stream(self.seed, key, next(model.parameters()).device):
                batches = list(select(data, split, first).batches(batch_size))
                self._clean[key] = set_loss_value(model, batches, None)
            self.computed += 1
        return self._clean[key]
