"""The contract of every evaluation metric (clean, robust, AutoAttack, flatness, Hessian, ...).

``metric(model, data, results) -> {"test/robust_error/pgd": 0.43, ...}``: the model arrives in
eval mode on the compute device; ``results`` holds what earlier metrics of the same evaluation
returned (so a metric may derive from them, e.g. the robust generalization gap). Keys are flat and
slash-namespaced; errors are fractions in [0, 1]; values are plain floats.
"""

from __future__ import annotations

from torch import nn

from advflat import checks
from advflat.data.base import ImageData


class Metric:
    def __call__(
        self, model: nn.Module, data: ImageData, results: dict[str, float]
    ) -> dict[str, float]:
        raise NotImplementedError

    def on_examples(self, split: str, first: int | None, batch_size: int) -> None:
        """Validate and keep which examples a metric reads: the ``first`` N (None: all) of
        ``split``, ``batch_size`` at a time."""
        self.split = checks.one_of("split", split, ("train", "test"))
        self.first = None if first is None else checks.at_least("first", first, 1)
        self.batch_size = checks.at_least("batch_size", batch_size, 1)
