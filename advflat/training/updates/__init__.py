"""How the weights move: one update rule per module (``trainer/update=sgd|awp|entropy_sgd``).

A new rule subclasses ``Update``, implements ``step`` (and ``attach`` when it uses the
top-level ``weight_attack``), and gets a ``conf/trainer/update/<name>.yaml``.
"""

from advflat.training.updates.awp import AWP, WeightAscent
from advflat.training.updates.base import Update
from advflat.training.updates.entropy_sgd import EntropySGD
from advflat.training.updates.sgd import OptimizerStep

__all__ = ["AWP", "EntropySGD", "OptimizerStep", "Update", "WeightAscent"]
