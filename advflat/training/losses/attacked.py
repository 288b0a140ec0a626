"""What every loss that trains against an input attack shares: the training attack and its
ε warm-up.

The attack runs in the attack's mode (``TrainingContext.attack_mode``: eval by default). The
configured attack is never changed: the ε warm-up (``Trainer``'s ``epsilon_warmup_epochs``)
builds the epoch's training attack anew from it, with ε and step size scaled, so the per-epoch
test curves keep the configured attack.
"""

from __future__ import annotations

from torch import Tensor, nn

from advflat.attacks.base import Attack, Objective, cross_entropy
from advflat.attacks.none import NoAttack
from advflat.training.context import TrainingContext
from advflat.training.losses.base import Loss

SCALED = ("epsilon", "step_size")  # the budget the warm-up scales


class AttackedLoss(Loss):
    """Base class of the adversarial objectives (AT, TRADES, MART, rotation, extra data)."""

    attack: Attack  # what this loss trains against at full ε
    training_attack: Attack  # the same at this epoch's warm-up scale

    def attach(self, attack: Attack | None) -> None:
        if attack is None or isinstance(attack, NoAttack):
            raise ValueError(
                f"{type(self).__name__} trains against an input attack: attack must not be none"
            )
        self.attack = self.training_attack = self.training_attack_for(attack)

    def training_attack_for(self, attack: Attack) -> Attack:
        """The attack this loss trains against at full ε: the configured one."""
        return attack

    def warm_up(self, scale: float) -> float | None:
        full = self.attack.arguments()
        if scale == 1.0:
            self.training_attack = self.attack
        else:
            scaled = {k: full[k] * scale for k in SCALED if full.get(k) is not None}
            self.training_attack = self.attack.rebuilt(**scaled)
        epsilon = full.get("epsilon")
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
