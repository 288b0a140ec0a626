"""Input attacks: ``x_adv = attack(model, x, y)`` (see ``advflat.attacks.base``)."""

from advflat.attacks.base import Attack, cross_entropy
from advflat.attacks.fgsm import FGSM
from advflat.attacks.none import NoAttack
from advflat.attacks.pgd import PGD

__all__ = ["FGSM", "PGD", "Attack", "NoAttack", "cross_entropy"]
