"""Which parameter tensors weight perturbations touch (docs/flatness.md).

Every parameter with ``requires_grad`` except those of normalization layers (BN, GN, LayerNorm,
ReBN, ...) and of the input normalization: rescaling-invariant parameters would make "relative"
radii meaningless, and the input normalization is a fixed preprocessing step. Biases are left out
by default (``include_biases``): AWP's description excludes them, the flatness measures leave them
open, and one choice for both keeps training and evaluation perturbing the same tensors.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from torch import Tensor, nn

from advflat.models import NORMALIZATION_TYPES


@dataclass(frozen=True, eq=False)
class WeightLayers:
    """The selected parameters (in ``model.named_parameters()`` order) and their names."""

    names: tuple[str, ...]
    parameters: tuple[nn.Parameter, ...]

    def __len__(self) -> int:
        return len(self.parameters)

    def __iter__(self) -> Iterator[nn.Parameter]:
        return iter(self.parameters)

    def weights(self) -> list[Tensor]:
        """Detached copies of the current values (the centre w of a relative ball)."""
        return [p.detach().clone() for p in self.parameters]

    def numel(self) -> int:
        return sum(p.numel() for p in self.parameters)


def _is_bias(name: str) -> bool:
    return name.rsplit(".", 1)[-1] == "bias"


def select_layers(model: nn.Module, *, include_biases: bool = False) -> WeightLayers:
    """The parameter tensors of ``model`` that a weight perturbation may change."""
    excluded = {
        id(p)
        for module in model.modules()
        if isinstance(module, NORMALIZATION_TYPES)
        for p in module.parameters()
    }
    chosen = [
        (name, p)
        for name, p in model.named_parameters()
        if p.requires_grad and id(p) not in excluded and (include_biases or not _is_bias(name))
    ]
    if not chosen:
        raise ValueError(
            "model has no parameter to perturb (all frozen, normalization layers or biases)"
        )
    names, parameters = zip(*chosen, strict=True)
    return WeightLayers(names=names, parameters=parameters)
