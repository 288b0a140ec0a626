"""No attack: the clean inputs (normal training, clean evaluation) behind the attack interface."""

from __future__ import annotations

from torch import Tensor, nn

from advflat.attacks.base import Attack, Objective, cross_entropy
from advflat.attacks.inputs import check_inputs


class NoAttack(Attack):
    """Returns x unchanged (detached); never runs the model."""

    def __init__(self) -> None:
        pass

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, objective: Objective = cross_entropy
    ) -> Tensor:
        # Clean errors on images of the wrong scale are as wrong as robust ones: check too.
        check_inputs("NoAttack", model, x, y, labels=objective is cross_entropy)
        return self.perturb(model, x, y, objective)  # nothing to freeze: the model is not run

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, objective: Objective) -> Tensor:
        return x.detach()
