"""``weight_attack=none``: no weight perturbation (plain training, no flatness attack)."""

from __future__ import annotations

import torch
from torch import nn

from advflat.attacks.base import Objective, cross_entropy
from advflat.weights.attack import Batches, WeightAttack, WeightPerturbation


class NoWeightAttack(WeightAttack):
    """Falsy, so ``if trainer.weight_attack:`` reads as "is there a weight attack"; calling it
    returns ν = 0 on the default layer selection."""

    def __init__(self) -> None:  # no radius: nothing is perturbed
        self.include_biases = False
        self.filter_wise = False

    def __bool__(self) -> bool:
        return False

    def __call__(
        self, model: nn.Module, batches: Batches = (), objective: Objective = cross_entropy
    ) -> WeightPerturbation:
        layers = self.layers(model)
        return WeightPerturbation(layers, [torch.zeros_like(p) for p in layers.parameters])
