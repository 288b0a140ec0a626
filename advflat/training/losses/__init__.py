"""What one batch costs: one objective per module (``trainer=normal|adversarial|trades|...``).

A new objective subclasses ``Loss`` (or ``AttackedLoss`` when it trains against the input
attack), implements ``on`` (and ``inputs``), and gets a ``conf/trainer/<name>.yaml``.
"""

from advflat.training.losses.adversarial import AdversarialLoss
from advflat.training.losses.attacked import AttackedLoss
from advflat.training.losses.base import BatchPlan, Loss, split_stats
from advflat.training.losses.clean import CleanLoss
from advflat.training.losses.mart import MARTLoss
from advflat.training.losses.rotation import RotationLoss
from advflat.training.losses.semi_supervised import SemiSupervisedLoss
from advflat.training.losses.trades import TRADESLoss

__all__ = [
    "AdversarialLoss",
    "AttackedLoss",
    "BatchPlan",
    "CleanLoss",
    "Loss",
    "MARTLoss",
    "RotationLoss",
    "SemiSupervisedLoss",
    "TRADESLoss",
    "split_stats",
]
