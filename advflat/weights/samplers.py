"""Random perturbations in the relative ball B_ξ(w), group by group (see ``ball``).

sphere: ||ν_g|| = ξ||w_g|| exactly (average-case flatness); ball: uniform in volume, radius
ξ||w_g||·u^(1/d_g); uniform_norm: radius u·ξ||w_g|| with u ~ U[0, 1] (the paper's start for
gradient ascent); zero: ν = 0 (a deterministic start). Directions are isotropic Gaussian.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from advflat.weights.ball import RelativeBall, group_sizes, rescale


def _uniform_like(norm: Tensor) -> Tensor:
    """One u ~ U[0, 1] per group, shaped like the group norms."""
    return torch.rand(norm.shape, device=norm.device, dtype=norm.dtype)


def sphere(ball: RelativeBall) -> list[Tensor]:
    directions = [torch.randn_like(w) for w in ball.weights]
    return rescale(directions, ball.radii, ball.filter_wise)


def uniform_ball(ball: RelativeBall) -> list[Tensor]:
    radii = [
        r * _uniform_like(r) ** (1.0 / group_sizes(w, ball.filter_wise))
        for r, w in zip(ball.radii, ball.weights, strict=True)
    ]
    return rescale([torch.randn_like(w) for w in ball.weights], radii, ball.filter_wise)


def uniform_norm(ball: RelativeBall) -> list[Tensor]:
    radii = [r * _uniform_like(r) for r in ball.radii]
    return rescale([torch.randn_like(w) for w in ball.weights], radii, ball.filter_wise)


def zero(ball: RelativeBall) -> list[Tensor]:
    return [torch.zeros_like(w) for w in ball.weights]


# name -> sampler(ball) -> ν; ``sampler`` / ``init`` config keys look names up here.
SAMPLERS: dict[str, Callable[[RelativeBall], list[Tensor]]] = {
    "sphere": sphere,
    "ball": uniform_ball,
    "uniform_norm": uniform_norm,
    "zero": zero,
}
