"""Training methods: normal and adversarial training share one loop (``Trainer``)."""

from advflat.training.adversarial import AdversarialTraining
from advflat.training.trainer import Trainer

__all__ = ["AdversarialTraining", "Trainer"]
