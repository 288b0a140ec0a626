"""Training methods: normal and adversarial training share one loop (``Trainer``).

``RobustTraining`` is the base of every method that trains against an input attack (attack
mode, weight clipping, early stopping, method state in checkpoints); the paper's methods
(SPEC §1) each live in their own module.
"""

from advflat.training.adversarial import AdversarialTraining
from advflat.training.awp import AWP, RWP
from advflat.training.early_stopping import EarlyStopping
from advflat.training.entropy_sgd import EntropySGD
from advflat.training.friendly import FriendlyPGD
from advflat.training.mart import MART
from advflat.training.robust import RobustTraining
from advflat.training.rotation import RotationTraining
from advflat.training.semi_supervised import SemiSupervisedTraining
from advflat.training.trades import TRADES
from advflat.training.trainer import Trainer

__all__ = [
    "AWP",
    "MART",
    "RWP",
    "TRADES",
    "AdversarialTraining",
    "EarlyStopping",
    "EntropySGD",
    "FriendlyPGD",
    "RobustTraining",
    "RotationTraining",
    "SemiSupervisedTraining",
    "Trainer",
]
