"""PGD-K-τ, the "friendly" attack of Zhang et al. 2020 ("Attacks which do not kill training make
adversarial learning stronger", FAT): PGD that stops τ steps after an example is misclassified.

Each example carries a budget of τ steps. Before every step, an example that is already
misclassified (w.r.t. the attack's target) spends one unit of budget and takes the step; with
no budget left it stops where it is for good. τ = 0 stops at the first misclassified iterate;
τ >= K is plain PGD-K (without best-iterate selection). The iterate where an example stopped (or
the last one) is returned. Training uses it through ``AdversarialLoss(friendly_tau=τ)``, which
takes ε, step size, K, norm and init from the configured PGD attack; ``attack=friendly_pgd``
configures it directly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from advflat import checks
from advflat.attacks.base import Attack, Objective, input_gradient
from advflat.attacks.norms import INITS, NORMS, project


class FriendlyPGD(Attack):
    """PGD-K-τ: ``steps`` = K, ``tau`` = τ; geometry as PGD (``norm``, ``init``)."""

    def __init__(
        self,
        *,
        epsilon: float,
        step_size: float,
        steps: int,
        tau: int,
        norm: str,
        init: str,
    ) -> None:
        self.epsilon = checks.positive("epsilon", epsilon)
        self.step_size = checks.positive("step_size", step_size)
        self.steps = checks.at_least("steps", steps, 1)
        self.tau = checks.at_least("tau", tau, 0)
        self.norm = checks.one_of("norm", norm, NORMS)
        self.init = checks.one_of("init", init, INITS)

    @classmethod
    def like(cls, attack: Any, tau: int) -> FriendlyPGD:
        """PGD-K-τ with the ε, step size, K, norm and init of a configured PGD attack."""
        missing = [k for k in ("epsilon", "step_size", "steps") if not hasattr(attack, k)]
        if missing:
            raise ValueError(
                f"friendly_tau needs a PGD attack (with epsilon, step_size and steps), "
                f"got {type(attack).__name__}"
            )
        return cls(
            epsilon=attack.epsilon,
            step_size=attack.step_size,
            steps=attack.steps,
            tau=tau,
            norm=_name(getattr(attack, "norm", "linf")),
            init=_name(getattr(attack, "init", "uniform_norm")),
        )

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, objective: Objective) -> Tensor:
        norm = NORMS[self.norm]
        x_adv = project(x, x + INITS[self.init](norm, x, self.epsilon), self.epsilon, self.norm)
        budget = torch.full_like(y, self.tau, dtype=torch.long)  # (B,)
        active = torch.ones_like(y, dtype=torch.bool)  # (B,)
        for _ in range(self.steps):
            _, logits, gradient = input_gradient(model, x_adv, y, objective)
            wrong = logits.argmax(dim=1) != y
            active &= ~(wrong & (budget == 0))
            budget -= (wrong & active).long()
            if not active.any():
                break
            stepped = project(
                x, x_adv + self.step_size * norm.ascent_direction(gradient), self.epsilon, self.norm
            )
            x_adv = torch.where(active.view(-1, *[1] * (x.dim() - 1)), stepped, x_adv)
        return x_adv


def _name(value: object) -> str:
    """A norm/init given as a registry key or as an object with a ``name``."""
    return value if isinstance(value, str) else str(getattr(value, "name", value))
