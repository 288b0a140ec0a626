"""Input attacks: ``x_adv = attack(model, x, y)`` (see ``advflat.attacks.base``)."""

from advflat.attacks.apgd import APGD, APGDTargeted
from advflat.attacks.autoattack import AutoAttack
from advflat.attacks.base import Attack, cross_entropy
from advflat.attacks.fab import FAB, FABTargeted
from advflat.attacks.fgsm import FGSM
from advflat.attacks.friendly_pgd import FriendlyPGD
from advflat.attacks.none import NoAttack
from advflat.attacks.pgd import PGD
from advflat.attacks.square import Square

__all__ = [
    "APGD",
    "FAB",
    "FGSM",
    "PGD",
    "APGDTargeted",
    "Attack",
    "AutoAttack",
    "FABTargeted",
    "FriendlyPGD",
    "NoAttack",
    "Square",
    "cross_entropy",
]
