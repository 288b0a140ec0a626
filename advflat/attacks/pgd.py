"""Projected gradient descent (ascent) on the inputs: Madry et al. 2018, as configured in the paper.

Threat model: ||x_adv − x|| <= ε (L∞ or L2) and x_adv in the box [0, 1]. Each restart draws a
random start (``init``), projects it onto box ∩ ball and takes ``steps`` steps along the
normalized gradient of ``objective`` (signed for L∞, unit L2 norm for L2; the raw gradient with
``normalized=False``), optionally with heavy-ball momentum, projecting after every step. With
``best`` the iterate with the highest objective per example is returned (start and final iterate
included); across restarts the worst case (highest objective) per example is kept.

The target is passed to ``objective`` untouched: labels (B,) for cross-entropy, clean
probabilities (B, K) for TRADES' KL objective, ... — PGD never looks inside it.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from advflat.attacks.base import Attack, Objective, input_gradient
from advflat.attacks.norms import INITS, NORMS, Norm, per_example
from advflat.core import checks


def keep_higher(
    best_x: Tensor, best_loss: Tensor, x: Tensor, loss: Tensor
) -> tuple[Tensor, Tensor]:
    """Per example, the input with the higher loss (ties and NaN keep the earlier one)."""
    higher = loss > best_loss  # (B,)
    return torch.where(per_example(higher, x), x, best_x), torch.where(higher, loss, best_loss)


class StopRule(Protocol):
    """Per-example stopping inside PGD's loop (PGD-K-τ's budget): an example that stopped
    keeps its iterate while the others step on."""

    def all_stopped(self, logits: Tensor) -> bool:
        """Update which examples still step from the logits (B, K) at the current iterates;
        True once none does (the loop ends early)."""
        ...

    def hold(self, stepped: Tensor, x_adv: Tensor) -> Tensor:
        """``stepped`` where an example still steps, ``x_adv`` where it stopped."""
        ...


class PGD(Attack):
    """PGD-``steps`` with ``restarts`` random restarts in the ``norm`` ball of radius ``epsilon``.

    ``momentum`` μ in [0, 1): heavy-ball on the normalized gradient, v ← μ·v + d, step α·v
    (μ = 0 is plain PGD). ``best=False`` returns the final iterate and saves one forward pass
    per restart (with one restart); ``best=True`` is the evaluation-correct choice. The budget
    (``epsilon``, ``step_size``, ``steps``, ``restarts``) has no defaults: the paper's training
    PGD-7 is set in conf/attack/pgd.yaml, its evaluation PGD-20 with 1 or 10 restarts in
    conf/attack/pgd20.yaml and pgd20x10.yaml.
    """

    def __init__(
        self,
        *,
        epsilon: float,
        step_size: float,
        steps: int,
        restarts: int,
        norm: str = "linf",
        init: str = "uniform_norm",
        momentum: float = 0.0,
        normalized: bool = True,
        best: bool = True,
    ) -> None:
        self.epsilon = checks.positive("epsilon", epsilon)
        self.step_size = checks.positive("step_size", step_size)
        self.steps = checks.at_least("steps", steps, 1)
        self.restarts = checks.at_least("restarts", restarts, 1)
        self.norm = checks.one_of("norm", norm, NORMS)
        self.init = checks.one_of("init", init, INITS)
        checks.number("momentum", momentum)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.momentum = momentum
        self.normalized = normalized
        self.best = best

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, objective: Objective) -> Tensor:
        x = x.detach()  # a view, no copy: keeps a caller's graph out of the bookkeeping
        if self.restarts == 1 and not self.best:
            return self.ascend(model, x, y, objective)[0]  # nothing to compare: no extra forward
        best_x, best_loss = self.restart(model, x, y, objective)
        for _ in range(self.restarts - 1):
            x_adv, loss = self.restart(model, x, y, objective)
            best_x, best_loss = keep_higher(best_x, best_loss, x_adv, loss)
        return best_x

    def restart(
        self, model: nn.Module, x: Tensor, target: Tensor, objective: Objective
    ) -> tuple[Tensor, Tensor]:
        """One run from a fresh random start: (x_adv, its per-example loss (B,))."""
        final_x, best_x, best_loss = self.ascend(model, x, target, objective)
        with torch.no_grad():
            loss = objective(model(final_x), target)  # (B,): the one extra forward per restart
        if not self.best:
            return final_x, loss
        return keep_higher(best_x, best_loss, final_x, loss)

    def ascend(
        self, model: nn.Module, x: Tensor, target: Tensor, objective: Objective
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The ``steps`` steps from a random start: (final iterate, best iterate, its loss).

        The best iterate is over the iterates whose gradient was taken (start to step K−1;
        the final one has no loss yet) and is tracked only with ``best``. A ``stop_rule``
        (FriendlyPGD's) holds the examples it stopped and ends the loop once all stopped.
        """
        norm: Norm = NORMS[self.norm]
        x_adv = norm.random_start(x, self.epsilon, self.init)
        best_x, best_loss = x_adv, x.new_full((x.shape[0],), float("-inf"))  # (B,)
        velocity: Tensor | None = None
        stop = self.stop_rule(target)
        for _ in range(self.steps):
            loss, logits, gradient = input_gradient(model, x_adv, target, objective)
            if self.best:  # the loss at x_adv comes free with its gradient
                best_x, best_loss = keep_higher(best_x, best_loss, x_adv, loss)
            if stop is not None and stop.all_stopped(logits):
                break
            direction = norm.ascent_direction(gradient) if self.normalized else gradient
            if self.momentum > 0:
                # In place is safe: the previous velocity was only read by the previous step.
                velocity = (
                    direction if velocity is None else velocity.mul_(self.momentum).add_(direction)
                )
                direction = velocity
            stepped = norm.move_and_project(x_adv, x, direction, self.step_size, self.epsilon)
            x_adv = stepped if stop is None else stop.hold(stepped, x_adv)
        return x_adv, best_x, best_loss

    def stop_rule(self, target: Tensor) -> StopRule | None:
        """A fresh per-example stop rule for one run on ``target``; None: every example takes
        every step (plain PGD)."""
        return None
