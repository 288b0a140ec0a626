"""Evaluation metrics; ``Evaluation`` runs an ordered set of them on the final model."""

from advflat.evaluation.autoattack_metric import AutoAttackRobustness
from advflat.evaluation.evaluation import Evaluation
from advflat.evaluation.flatness import AverageCaseFlatness, WorstCaseFlatness, flatness
from advflat.evaluation.hessian import HessianSpectrum
from advflat.evaluation.landscape import LossContour, LossLandscape
from advflat.evaluation.performance import (
    CleanPerformance,
    RobustGeneralizationGap,
    RobustPerformance,
)

__all__ = [
    "AutoAttackRobustness",
    "AverageCaseFlatness",
    "CleanPerformance",
    "Evaluation",
    "HessianSpectrum",
    "LossContour",
    "LossLandscape",
    "RobustGeneralizationGap",
    "RobustPerformance",
    "WorstCaseFlatness",
    "flatness",
]
