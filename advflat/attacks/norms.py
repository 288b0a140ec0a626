"""Threat-model geometry for input attacks: L∞ and L2 balls (pure functions on batches).

Every function works per example on (B, ...) tensors. A `Norm` bundles what an attack needs
from its ball: the norm itself, projection onto box ∩ ball(x, ε), the steepest-ascent direction,
one ascent step followed by that projection, and random starts. Attacks look norms up in
``NORMS`` and random starts in ``INITS`` by the config string (registries, not dispatch chains).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor


def per_example(values: Tensor, like: Tensor) -> Tensor:
    """Reshape (B,) to (B, 1, 1, ...) so per-example values (a radius, a step size, a mask for
    ``torch.where``) broadcast against ``like``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def project_box(x: Tensor, low: float = 0.0, high: float = 1.0) -> Tensor:
    return x.clamp(low, high)


class Norm(ABC):
    """One threat model's ball; the per-example pieces are the subclass's, the way an attack
    combines them (project, step, start) is shared."""

    name: str

    @abstractmethod
    def __call__(self, delta: Tensor) -> Tensor:
        """||δ|| per example, (B,)."""

    @abstractmethod
    def project(self, delta: Tensor, epsilon: float) -> Tensor:
        """δ onto the ball of radius ε around 0, per example."""

    @abstractmethod
    def ascent_direction(self, gradient: Tensor) -> Tensor:
        """The steepest-ascent direction of unit norm (in this norm) for ``gradient``."""

    @abstractmethod
    def sample_uniform(self, like: Tensor, epsilon: float) -> Tensor:
        """δ uniform in the ball of radius ε (the cube for L∞), one per example of ``like``."""

    @abstractmethod
    def sample_uniform_norm(self, like: Tensor, epsilon: float) -> Tensor:
        """δ with a random direction and a radius uniform in [0, ε]."""

    def project_onto_threat(self, x_adv: Tensor, x: Tensor, epsilon: float) -> Tensor:
        """``x_adv`` onto box ∩ ball(x, ε).

        Ball first, then box: for L∞ this is the exact projection onto the intersection (both
        are coordinate-wise intervals); for L2 the result lies in both sets (clipping to the
        box only shortens δ), which is what every PGD implementation does.
        """
        return project_box(x + self.project(x_adv - x, epsilon))

    def move_and_project(
        self, x_adv: Tensor, x: Tensor, direction: Tensor, step_size: float | Tensor, epsilon: float
    ) -> Tensor:
        """x_adv + step_size·direction, projected onto box ∩ ball(x, ε). ``step_size`` is a
        number or a per-example (B, 1, ...) tensor (APGD's η)."""
        return self.project_onto_threat(x_adv + step_size * direction, x, epsilon)

    def step_and_project(
        self, x_adv: Tensor, x: Tensor, gradient: Tensor, step_size: float | Tensor, epsilon: float
    ) -> Tensor:
        """One steepest-ascent step on ``gradient`` (signed for L∞, unit L2 norm for L2),
        projected onto box ∩ ball(x, ε)."""
        direction = self.ascent_direction(gradient)
        return self.move_and_project(x_adv, x, direction, step_size, epsilon)

    def random_start(self, x: Tensor, epsilon: float, init: str) -> Tensor:
        """x + δ₀ with δ₀ drawn by ``INITS[init]``, projected onto box ∩ ball(x, ε)."""
        return self.project_onto_threat(x + INITS[init](self, x, epsilon), x, epsilon)


class LinfNorm(Norm):
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
        return z / per_example(self(z), z) * per_example(radius, z)


class L2Norm(Norm):
    name = "l2"

    def __call__(self, delta: Tensor) -> Tensor:  # (B,)
        return delta.flatten(1).norm(dim=1)

    def project(self, delta: Tensor, epsilon: float) -> Tensor:
        norms = self(delta)
        scale = (epsilon / norms.clamp_min(1e-12)).clamp(max=1.0)
        return delta * per_example(scale, delta)

    def ascent_direction(self, gradient: Tensor) -> Tensor:
        return gradient / per_example(self(gradient).clamp_min(1e-12), gradient)

    def sample_uniform(self, like: Tensor, epsilon: float) -> Tensor:
        """Uniform in the L2 ball: Gaussian direction, radius ε·u^(1/d)."""
        z = torch.randn_like(like)
        d = like[0].numel()
        radius = torch.rand(like.shape[0], device=like.device, dtype=like.dtype) ** (1.0 / d)
        return self.ascent_direction(z) * per_example(radius * epsilon, z)

    def sample_uniform_norm(self, like: Tensor, epsilon: float) -> Tensor:
        """Gaussian direction, radius u·ε (uniform in the norm, not in volume)."""
        z = torch.randn_like(like)
        radius = torch.rand(like.shape[0], device=like.device, dtype=like.dtype) * epsilon
        return self.ascent_direction(z) * per_example(radius, z)


NORMS: dict[str, Norm] = {"linf": LinfNorm(), "l2": L2Norm()}


def _zero(norm: Norm, like: Tensor, epsilon: float) -> Tensor:
    return torch.zeros_like(like)


def _uniform(norm: Norm, like: Tensor, epsilon: float) -> Tensor:
    return norm.sample_uniform(like, epsilon)


def _uniform_norm(norm: Norm, like: Tensor, epsilon: float) -> Tensor:
    return norm.sample_uniform_norm(like, epsilon)


# Random starts by config name: init(norm, like (B, ...), epsilon) -> δ₀ with ||δ₀|| <= ε.
INITS: dict[str, Callable[[Norm, Tensor, float], Tensor]] = {
    "zero": _zero,
    "uniform": _uniform,
    "uniform_norm": _uniform_norm,
}


def project(x: Tensor, x_adv: Tensor, epsilon: float, norm: str) -> Tensor:
    """Project ``x_adv`` onto box ∩ ball(x, ε) of the norm named ``norm``
    (``Norm.project_onto_threat``)."""
    return NORMS[norm].project_onto_threat(x_adv, x, epsilon)
