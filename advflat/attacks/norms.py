"""Threat-model geometry for input attacks: L∞ and L2 balls (pure functions on batches).

Every function works per example on (B, ...) tensors. A `Norm` bundles what an attack needs
from its ball: the norm itself, projection, the steepest-ascent direction and random starts.
Attacks look norms up in ``NORMS`` and random starts in ``INITS`` by the config string
(registries, not dispatch chains).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _per_example(values: Tensor, like: Tensor) -> Tensor:
    """Reshape (B,) to (B, 1, 1, ...) so it broadcasts against ``like``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def project_box(x: Tensor, low: float = 0.0, high: float = 1.0) -> Tensor:
    return x.clamp(low, high)


class LinfNorm:
    name = "linf"

    def __call__(self, delta: Tensor) -> Tensor:  # (B,)
        return delta.flatten(1).abs().amax(dim=1)

    def project(self, delta: Tensor, epsilon: float) -> Tensor:
        return delta.clamp(-epsilon, epsilon)

    def ascent_direction(self, gradient: Tensor) -> Tensor:
        # Steepest ascent w.r.t. L∞ is the signed gradient.
        return gradient.sign()

    def sample_uniform(self, like: Tensor, epsilon: float) -> Tensor:
        """Madry et al.: uniform in the cube [-ε, ε]^d."""
        return torch.empty_like(like).uniform_(-epsilon, epsilon)

    def sample_uniform_norm(self, like: Tensor, epsilon: float) -> Tensor:
        """The paper's init: direction z/||z||∞ with z ~ N(0, I), radius u·ε with u ~ U[0, 1]."""
        z = torch.randn_like(like)
        radius = torch.rand(like.shape[0], device=like.device, dtype=like.dtype) * epsilon
        return z / _per_example(self(z), z) * _per_example(radius, z)


class L2Norm:
    name = "l2"

    def __call__(self, delta: Tensor) -> Tensor:  # (B,)
        return delta.flatten(1).norm(dim=1)

    def project(self, delta: Tensor, epsilon: float) -> Tensor:
        norms = self(delta)
        scale = (epsilon / norms.clamp_min(1e-12)).clamp(max=1.0)
        return delta * _per_example(scale, delta)

    def ascent_direction(self, gradient: Tensor) -> Tensor:
        return gradient / _per_example(self(gradient).clamp_min(1e-12), gradient)

    def sample_uniform(self, like: Tensor, epsilon: float) -> Tensor:
        """Uniform in the L2 ball: Gaussian direction, radius ε·u^(1/d)."""
        z = torch.randn_like(like)
        d = like[0].numel()
        radius = torch.rand(like.shape[0], device=like.device, dtype=like.dtype) ** (1.0 / d)
        return self.ascent_direction(z) * _per_example(radius * epsilon, z)

    def sample_uniform_norm(self, like: Tensor, epsilon: float) -> Tensor:
        """Gaussian direction, radius u·ε (uniform in the norm, not in volume)."""
        z = torch.randn_like(like)
        radius = torch.rand(like.shape[0], device=like.device, dtype=like.dtype) * epsilon
        return self.ascent_direction(z) * _per_example(radius, z)


Norm = LinfNorm | L2Norm
NORMS: dict[str, Norm] = {"linf": LinfNorm(), "l2": L2Norm()}

# Random starts by config name: init(norm, like (B, ...), epsilon) -> δ₀ with ||δ₀|| <= ε.
INITS: dict[str, Callable[[Norm, Tensor, float], Tensor]] = {
    "zero": lambda norm, like, epsilon: torch.zeros_like(like),
    "uniform": lambda norm, like, epsilon: norm.sample_uniform(like, epsilon),
    "uniform_norm": lambda norm, like, epsilon: norm.sample_uniform_norm(like, epsilon),
}


def project(x: Tensor, x_adv: Tensor, epsilon: float, norm: str, box=(0.0, 1.0)) -> Tensor:
    """Project ``x_adv`` onto box ∩ ball(x, ε).

    Ball first, then box: for L∞ this is the exact projection onto the intersection (both are
    coordinate-wise intervals); for L2 the result lies in both sets (clipping to the box only
    shortens δ), which is what every PGD implementation does.
    """
    delta = NORMS[norm].project(x_adv - x, epsilon)
    return project_box(x + delta, *box)
