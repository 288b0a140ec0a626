"""The input-attack contract every attack in ``advflat.attacks`` follows.

``x_adv = attack(model, x, y)``: x in [0, 1], shape (B, C, H, W); x_adv is detached and lies in
box ∩ ball. Every call checks its inputs once (``advflat.attacks.inputs``): images outside [0, 1]
or not finite, and labels that are not class indices of the model, raise a ValueError. The
caller owns train/eval mode. Attacks never call ``.backward()``: input gradients come from
``torch.autograd.grad`` with the parameters' ``requires_grad`` switched off, so no weight
gradient is computed or stored.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advflat.attacks.inputs import check_inputs, checked
from advflat.core.configured import Configured

# objective(logits (B, K), target) -> per-example loss (B,) that the attack maximises.
Objective = Callable[[Tensor, Tensor], Tensor]


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y, reduction="none")


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Switch off requires_grad of the parameters for the duration (restored afterwards)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def input_gradient(
    model: nn.Module, x: Tensor, target: Tensor, objective: Objective
) -> tuple[Tensor, Tensor, Tensor]:
    """Return (per-example loss (B,), logits (B, K), d loss.sum() / d x) — inputs only."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        loss = objective(logits, target)
        (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), logits.detach(), grad


class Attack(Configured, ABC):
    """Abstract base: subclasses implement ``perturb``; ``__call__`` checks the inputs once and
    freezes the weights.

    With the default objective y holds labels and is checked as such; a custom objective's
    target (TRADES' clean probabilities, ...) is opaque, so only its batch size is checked.
    Attacks an attack runs inside (AutoAttack's components) do not check again. ``repr`` and
    ``rebuilt`` come from the constructor's arguments (``advflat.core.configured``).
    """

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, objective: Objective = cross_entropy
    ) -> Tensor:
        check_inputs(type(self).__name__, model, x, y, labels=objective is cross_entropy)
        with checked(), frozen(model):
            return self.perturb(model, x, y, objective).detach()

    @abstractmethod
    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, objective: Objective) -> Tensor:
        """x_adv for (x, y): the attack itself, on checked inputs with the weights frozen."""
