"""The relative layer-wise ball B_ξ(w) = {w + ν : ||ν_g||₂ <= ξ·||w_g||₂ for every group g}.

A group is a whole selected tensor (layer-wise, the paper's default) or one output filter, i.e.
one slice along dim 0 (``filter_wise``). The radius is relative to the weights, so the ball is
invariant to rescaling a layer — the point of the paper's measure. ν is a list of tensors aligned
with the selected parameters.
"""

from __future__ import annotations

from torch import Tensor

from advflat.attacks.norms import per_example
from advflat.core import checks

# Guards divisions by the norm of an all-zero group (its ν or gradient is then 0 as well).
_TINY = 1e-12


def group_norms(t: Tensor, filter_wise: bool) -> Tensor:
    """L2 norm per group, broadcastable to ``t``.

    Shape () layer-wise, (out, 1, ..., 1) filter-wise (for a 1-D bias each entry is a group).
    """
    if not filter_wise or t.dim() == 0:
        return t.norm()
    return per_example(t.reshape(t.shape[0], -1).norm(dim=1), t)


def group_sizes(t: Tensor, filter_wise: bool) -> int:
    """Number of entries per group (the dimension of each group's sphere)."""
    return t[0].numel() if filter_wise and t.dim() > 0 else t.numel()


def rescale(tensors: list[Tensor], norms: list[Tensor], filter_wise: bool) -> list[Tensor]:
    """Each group of each tensor scaled to the given L2 norm (zero groups stay zero)."""
    return [
        t * (n / group_norms(t, filter_wise).clamp_min(_TINY))
        for t, n in zip(tensors, norms, strict=True)
    ]


class RelativeBall:
    """B_ξ(w) around fixed weights ``weights`` (copies, taken before any perturbation)."""

    def __init__(self, weights: list[Tensor], xi: float, *, filter_wise: bool = False) -> None:
        self.xi = checks.positive("xi", xi)
        self.filter_wise = filter_wise
        self.weights = weights
        self.weight_norms = [group_norms(w, filter_wise) for w in weights]
        self.radii = [xi * n for n in self.weight_norms]

    def relative_norms(self, nu: list[Tensor]) -> list[Tensor]:
        """||ν_g|| / ||w_g|| per group (equals ξ on the sphere)."""
        return [
            group_norms(v, self.filter_wise) / n.clamp_min(_TINY)
            for v, n in zip(nu, self.weight_norms, strict=True)
        ]

    def project(self, nu: list[Tensor]) -> list[Tensor]:
        """Rescale every group that is longer than its radius back onto the sphere."""
        projected = []
        for v, radius in zip(nu, self.radii, strict=True):
            length = group_norms(v, self.filter_wise)
            projected.append(v * (radius / length.clamp_min(_TINY)).clamp(max=1.0))
        return projected

    def normalize_gradient(self, gradients: list[Tensor]) -> list[Tensor]:
        """Layer-wise relative L2 normalization g_g ← g_g·||w_g|| / ||g_g||, so a step of size
        lr moves every group by lr times its own weight norm."""
        return rescale(gradients, self.weight_norms, self.filter_wise)
