"""The weight-attack contract: ``perturbation = weight_attack(model, batches)``.

``batches`` is a sequence of (x (B, C, H, W), y (B,)) — one batch during AWP-style training, the
whole evaluation set for flatness (one ν is shared by all of it). The attack returns a
``WeightPerturbation`` in B_ξ(w) and leaves the parameters bitwise as it found them; the caller
applies it with ``perturbed(model, p.layers, p.nu)``. Like input attacks, the caller owns
train/eval mode, and weight gradients come from ``torch.autograd.grad`` on the selected
parameters only (nothing is written to ``.grad``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from advflat.attacks.base import Objective, cross_entropy
from advflat.core import checks
from advflat.weights.ball import RelativeBall
from advflat.weights.layers import WeightLayers, select_layers
from advflat.weights.samplers import SAMPLERS

Batches = Sequence[tuple[Tensor, Tensor]]


@dataclass(eq=False)
class WeightPerturbation:
    """ν aligned with ``layers``; ``inputs``: adversarial inputs per batch (joint attack only);
    ``loss``: the mean objective at the returned point as the attack measured it (or None);
    ``use_loss``: flatness takes ``loss`` as L(w + ν) as it is instead of evaluating the model
    at (ν, ``inputs``) again (the joint attack's per-batch protocol: the losses of its last
    pass)."""

    layers: WeightLayers
    nu: list[Tensor]
    inputs: list[Tensor] | None = None
    loss: float | None = None
    use_loss: bool = False


def total_examples(batches: Batches) -> int:
    total = sum(len(y) for _, y in batches)
    if total == 0:
        raise ValueError("batches must hold at least one example")
    return total


def set_gradient(
    model: nn.Module, layers: WeightLayers, batches: Batches, objective: Objective
) -> tuple[Tensor, list[Tensor]]:
    """Mean objective over all batches and its gradient w.r.t. the selected parameters."""
    total = total_examples(batches)
    losses = []
    gradients = [torch.zeros_like(p) for p in layers.parameters]
    for x, y in batches:
        with torch.enable_grad():
            loss = objective(model(x), y).sum()  # summed here, divided by the set size below
            batch_gradients = torch.autograd.grad(loss, layers.parameters)
        losses.append(loss.detach())
        for g, b in zip(gradients, batch_gradients, strict=True):
            g.add_(b)
    return torch.stack(losses).sum() / total, [g / total for g in gradients]


@torch.no_grad()
def set_loss(
    model: nn.Module,
    batches: Batches,
    objective: Objective = cross_entropy,
    inputs: list[Tensor] | None = None,
) -> Tensor:
    """Mean objective over all batches (at ``inputs`` instead of the clean x when given)."""
    losses = [
        objective(model(x if inputs is None else inputs[i]), y).sum()
        for i, (x, y) in enumerate(batches)
    ]
    return torch.stack(losses).sum() / total_examples(batches)


class WeightAttack(ABC):
    """Abstract base: the layer selection and relative ball shared by all weight attacks."""

    # Whether the attack also returns adversarial inputs (the robust loss comes with it).
    perturbs_inputs = False

    def __init__(
        self, *, xi: float, include_biases: bool = False, filter_wise: bool = False
    ) -> None:
        self.xi = checks.positive("xi", xi)
        self.include_biases = include_biases
        self.filter_wise = filter_wise

    def layers(self, model: nn.Module) -> WeightLayers:
        return select_layers(model, include_biases=self.include_biases)

    def ball(self, layers: WeightLayers) -> RelativeBall:
        return RelativeBall(layers.weights(), self.xi, filter_wise=self.filter_wise)

    def recorded(self) -> dict[str, float]:
        """Settings written next to a flatness metric's value (``flatness/worst/robust/xi``):
        those that differ between published protocols. None by default."""
        return {}

    @abstractmethod
    def __call__(
        self, model: nn.Module, batches: Batches, objective: Objective = cross_entropy
    ) -> WeightPerturbation:
        """ν in B_ξ(w) for ``batches`` (the parameters are left as they were)."""


def check_sampler(name: str, value: str) -> str:
    return checks.one_of(name, value, SAMPLERS)
