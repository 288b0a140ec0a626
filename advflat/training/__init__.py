"""Training: ONE loop (``Trainer``) composed of a loss (``advflat.training.losses``: what a batch
costs) and an update rule (``advflat.training.updates``: how the weights move)."""

from advflat.training.early_stopping import EarlyStopping
from advflat.training.losses import (
    AdversarialLoss,
    CleanLoss,
    Loss,
    MARTLoss,
    RotationLoss,
    SemiSupervisedLoss,
    TRADESLoss,
)
from advflat.training.trainer import Trainer
from advflat.training.updates import AWP, EntropySGD, OptimizerStep, Update

__all__ = [
    "AWP",
    "AdversarialLoss",
    "CleanLoss",
    "EarlyStopping",
    "EntropySGD",
    "Loss",
    "MARTLoss",
    "OptimizerStep",
    "RotationLoss",
    "SemiSupervisedLoss",
    "TRADESLoss",
    "Trainer",
    "Update",
]
