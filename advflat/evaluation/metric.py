"""The contract of every evaluation metric (clean, robust, AutoAttack, flatness, Hessian, ...).

``metric(model, data, results) -> {"test/robust_error/pgd": 0.43, ...}``: the model arrives in
eval mode on the compute device; ``results`` holds what earlier metrics of the same evaluation
returned (so a metric may derive from them, e.g. the robust generalization gap). Keys are flat and
slash-namespaced; errors are fractions in [0, 1]; values are plain floats. Before each call the
evaluation sets ``metric.shared`` (results computed once per model: the PGD reference robust
loss, the clean reference loss) and seeds the metric's own random stream.
``metric.input_attacks()`` names the attacks on the inputs it runs, whose threat model the
evaluation records.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import nn

from advflat.attacks.base import Attack
from advflat.core import checks
from advflat.data.base import ImageData, select
from advflat.evaluation.flatness_losses import set_loss_value
from advflat.evaluation.reference import RobustLosses, SharedReferences, robust_losses
from advflat.evaluation.threat_model import perturbs_inputs


class Metric(ABC):
    # Set by the evaluation before every call: results shared by the metrics of one model.
    shared: SharedReferences | None = None

    @abstractmethod
    def __call__(
        self, model: nn.Module, data: ImageData, results: dict[str, float]
    ) -> dict[str, float]:
        """The metric's values for ``model`` on ``data`` (see the module docstring)."""

    def input_attacks(self) -> dict[str, object]:
        """The attacks on the inputs this metric runs, by the attribute that holds them
        (``attack``, ``reference_attack``, a joint ``weight_attack``); a role switched off
        (None, e.g. the attack of a clean loss) is not one."""
        return {role: value for role, value in vars(self).items() if perturbs_inputs(value)}

    def on_examples(self, split: str, first: int | None, batch_size: int) -> None:
        """Validate and keep which examples a metric reads: the ``first`` N (None: all) of
        ``split``, ``batch_size`` at a time."""
        self.split = checks.one_of("split", split, ("train", "test"))
        self.first = None if first is None else checks.at_least("first", first, 1)
        self.batch_size = checks.at_least("batch_size", batch_size, 1)

    def robust_reference(self, model: nn.Module, data: ImageData, attack: Attack) -> RobustLosses:
        """Per-example robust losses of this metric's examples under ``attack``: from the
        evaluation's shared results when they match, computed here when run standalone."""
        if self.shared is None:
            examples = select(data, self.split, self.first)
            return robust_losses(model, examples, attack, self.batch_size)
        return self.shared.robust_losses(
            model,
            data,
            split=self.split,
            first=self.first,
            batch_size=self.batch_size,
            attack=attack,
        )

    def clean_reference(self, model: nn.Module, data: ImageData) -> float:
        """The mean clean CE of this metric's examples (``batch_size`` at a time): from the
        evaluation's shared results, computed here when run standalone."""
        if self.shared is None:
            batches = list(select(data, self.split, self.first).batches(self.batch_size))
            return set_loss_value(model, batches, None)
        return self.shared.clean_loss(
            model, data, split=self.split, first=self.first, batch_size=self.batch_size
        )
