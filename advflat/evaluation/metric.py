"""The contract of every evaluation metric (clean, robust, AutoAttack, flatness, Hessian, ...).

``metric(model, data, results) -> {"test/robust_error/pgd": 0.43, ...}``: the model arrives in
eval mode on the compute device; ``results`` holds what earlier metrics of the same evaluation
returned (so a metric may derive from them, e.g. the robust generalization gap). Keys are flat and
slash-namespaced; errors are fractions in [0, 1]; values are plain floats.
"""

from __future__ import annotations

from torch import nn

from advflat.data.base import ImageData


class Metric:
    def __call__(
        self, model: nn.Module, data: ImageData, results: dict[str, float]
    ) -> dict[str, float]:
        raise NotImplementedError
