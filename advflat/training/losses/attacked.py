"""What every loss that trains against an input attack shares: the training attack and its
ε warm-up.

The attack runs in the attack's mode (``TrainingContext.attack_mode``: eval by default). The
training attack is a copy of the configured one, so the ε warm-up (``Trainer``'s
``epsilon_warmup_epochs``) scales ε and step size of the training attack only; the per-epoch
test curves keep the configured attack.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn

from advflat.attacks.base import Attack, Objective, cross_entropy
from advflat.attacks.none import NoAttack
from advflat.training.context import TrainingContext
from advflat.training.losses.base import Loss


class AttackedLoss(Loss):
    """Base class of the adversarial objectives (AT, TRADES, MART, rotation, extra data)."""

    training_attack: Attack

    def attach(self, attack: Attack | None) -> None:
        if attack is None or isinstance(attack, NoAttack):
            raise ValueError(
                f"{type(self).__name__} trains against an input attack: attack must not be none"
            )
        self.training_attack = self.training_attack_for(attack)
        self._full = {k: getattr(self.training_attack, k, None) for k in ("epsilon", "step_size")}

    def training_attack_for(self, attack: Attack) -> Attack:
        """The attack this loss trains against (a copy: the warm-up scales it in place)."""
        return copy.copy(attack)

    def warm_up(self, scale: float) -> float | None:
        for key, full in self._full.items():
            if full is not None:
                setattr(self.training_attack, key, full * scale)
        epsilon = self._full["epsilon"]
        return None if epsilon is None else epsilon * scale

    def attacked(
        self,
        ctx: TrainingContext,
        model: nn.Module,
        x: Tensor,
        target: Tensor,
        objective: Objective = cross_entropy,
    ) -> Tensor:
        """Adversarial versions of x maximising ``objective(logits, target)`` (attack mode)."""
        with ctx.attack_mode(model):
            return self.training_attack(model, x, target, objective)
