"""Set-level losses the flatness measures compare: clean CE or robust CE (per-example attack),
at the current weights or at w + ν. Batched over the evaluation set, no per-example loops."""

from __future__ import annotations

from torch import nn

from advflat.attacks.base import Attack, Objective, cross_entropy
from advflat.weights import Batches, WeightPerturbation, perturbed, set_loss


def robust_set_loss(
    model: nn.Module, batches: Batches, attack: Attack, objective: Objective = cross_entropy
) -> float:
    """Mean objective at ``attack``'s adversarial examples (an estimate of the robust loss)."""
    inputs = [attack(model, x, y, objective) for x, y in batches]  # detached, in box ∩ ball
    return set_loss(model, batches, objective, inputs).item()


def set_loss_value(
    model: nn.Module,
    batches: Batches,
    attack: Attack | None,
    objective: Objective = cross_entropy,
) -> float:
    """Robust loss with an attack, clean loss without (mean ``objective``, default CE)."""
    if attack is None:
        return set_loss(model, batches, objective).item()
    return robust_set_loss(model, batches, attack, objective)


def perturbed_loss(
    model: nn.Module,
    batches: Batches,
    perturbation: WeightPerturbation,
    attack: Attack | None,
    objective: Objective = cross_entropy,
) -> float:
    """The loss at w + ν: at the perturbation's own adversarial inputs when it has them (joint
    attack), else clean (no attack) or robust by running ``attack`` on the perturbed model."""
    with perturbed(model, perturbation.layers, perturbation.nu):
        if perturbation.inputs is not None:
            return set_loss(model, batches, objective, perturbation.inputs).item()
        return set_loss_value(model, batches, attack, objective)
