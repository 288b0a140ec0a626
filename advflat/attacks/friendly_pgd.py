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
from torch import Tensor

from advflat.attacks.norms import per_example
from advflat.attacks.pgd import PGD
from advflat.core import checks


class FriendlyBudget:
    """PGD-K-τ's stop rule for one run: τ steps per example once its iterates are misclassified
    w.r.t. ``y``; an example with no budget left stops for good."""

    def __init__(self, y: Tensor, tau: int) -> None:
        self.y = y
        self.budget = torch.full_like(y, tau, dtype=torch.long)  # (B,)
        self.active = torch.ones_like(y, dtype=torch.bool)  # (B,)

    def all_stopped(self, logits: Tensor) -> bool:
        wrong = logits.argmax(dim=1) != self.y
        self.active &= ~(wrong & (self.budget == 0))
        self.budget -= (wrong & self.active).long()
        return not self.active.any()

    def hold(self, stepped: Tensor, x_adv: Tensor) -> Tensor:
        return torch.where(per_example(self.active, x_adv), stepped, x_adv)


class FriendlyPGD(PGD):
    """PGD-K-τ: ``steps`` = K, ``tau`` = τ; geometry as PGD (``norm``, ``init``). It is PGD's
    loop (one start, normalized steps, no momentum, the last iterate) with ``FriendlyBudget``
    as its stop rule."""

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
        super().__init__(
            epsilon=epsilon,
            step_size=step_size,
            steps=steps,
            restarts=1,
            norm=norm,
            init=init,
            best=False,
        )
        self.tau = checks.at_least("tau", tau, 0)

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

    def stop_rule(self, target: Tensor) -> FriendlyBudget:
        return FriendlyBudget(target, self.tau)


def _name(value: object) -> str:
    """A norm/init given as a registry key or as an object with a ``name``."""
    return value if isinstance(value, str) else str(getattr(value, "name", value))
