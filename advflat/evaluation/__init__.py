"""Evaluation metrics; ``Evaluation`` runs an ordered set of them on the final model."""

from advflat.evaluation.evaluation import Evaluation
from advflat.evaluation.performance import (
    CleanPerformance,
    RobustGeneralizationGap,
    RobustPerformance,
)

__all__ = ["CleanPerformance", "Evaluation", "RobustGeneralizationGap", "RobustPerformance"]
