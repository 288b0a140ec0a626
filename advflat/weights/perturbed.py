"""Apply a weight perturbation ν in place and take it off again, bitwise.

(w + ν) − ν is not w in floating point, so the selected parameters are copied before ν is added
and copied back on exit — only those tensors, never a deep copy of the model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from advflat.weights.layers import WeightLayers


def _check(model: nn.Module, layers: WeightLayers, nu: list[Tensor]) -> None:
    if len(nu) != len(layers):
        raise ValueError(f"nu must have one tensor per layer ({len(layers)}), got {len(nu)}")
    owned = {id(p) for p in model.parameters()}
    for name, p, v in zip(layers.names, layers.parameters, nu, strict=True):
        if id(p) not in owned:
            raise ValueError(f"layer {name} is not a parameter of this model")
        if v.shape != p.shape:
            raise ValueError(f"nu for {name} has shape {tuple(v.shape)}, expected {tuple(p.shape)}")


@contextlib.contextmanager
def perturbed(model: nn.Module, layers: WeightLayers, nu: list[Tensor]) -> Iterator[None]:
    """``with perturbed(model, layers, nu): ...`` runs the body at weights w + ν.

    Gradients taken inside land in ``p.grad`` of the (perturbed) parameters as usual, which is
    what AWP-style training applies to the restored weights.
    """
    _check(model, layers, nu)
    originals = [p.detach().clone() for p in layers.parameters]
    try:
        with torch.no_grad():
            for p, v in zip(layers.parameters, nu, strict=True):
                p.add_(v)
        yield
    finally:
        with torch.no_grad():
            for p, original in zip(layers.parameters, originals, strict=True):
                p.copy_(original)
