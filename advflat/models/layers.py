"""Layers every model shares: input normalization ("whiten"), ReBN, and the option registries.

``NORMALIZATIONS`` and ``ACTIVATIONS`` are the registries behind the ``normalization`` and
``activation`` config keys (docs/models.md#normalization). ``NORMALIZATION_TYPES`` lists the module
classes whose
parameters weight perturbations must leave alone (docs/flatness.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from advflat.core.checks import one_of


class InputNormalization(nn.Module):
    """The paper's "whiten": (x - mean) / std per channel, with frozen training-set statistics.

    Every model starts with it, so models take inputs in [0, 1] and attacks work in pixel units.
    ``mean``/``std`` of None mean 0/1 (identity). Buffers, not parameters: nothing here trains,
    and the statistics travel in the state dict.
    """

    mean: Tensor  # (1, C, 1, 1) buffers
    std: Tensor

    def __init__(
        self,
        *,
        channels: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        mean = [0.0] * channels if mean is None else list(mean)
        std = [1.0] * channels if std is None else list(std)
        for name, values in (("mean", mean), ("std", std)):
            if len(values) != channels:
                raise ValueError(
                    f"{name} must have one value per input channel ({channels}), got {values!r}"
                )
        if not all(s > 0 for s in std):
            raise ValueError(f"std must be > 0 in every channel, got {std!r}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std  # (B, C, H, W)


class ReBN(_BatchNorm):
    """Batch normalization (Ioffe & Szegedy, 2015) with effective scale 1 + weight (Stutz et al.).

    weight and bias start at 0, so the layer starts as plain standardization and weight decay
    pulls the scale towards 1 instead of towards 0. Accepts (N, C, *) inputs. A ``_BatchNorm``
    subclass on purpose: BN recalibration (``momentum = None``) and running-stat resets apply.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True)

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"ReBN expects (N, C, ...) inputs, got {x.dim()}D")

    @property
    def scale(self) -> Tensor:
        """The effective per-channel scale, 1 + weight."""
        return 1 + self.weight

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        momentum = 0.0
        if self.training:
            tracked = self.num_batches_tracked
            assert tracked is not None  # ReBN always tracks running statistics
            tracked.add_(1)
            # momentum None = cumulative average, as torch's BN (used for BN recalibration)
            momentum = 1.0 / float(tracked) if self.momentum is None else self.momentum
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.scale,
            self.bias,
            self.training,
            momentum,
            self.eps,
        )


def group_count(channels: int, max_groups: int = 32) -> int:
    """Groups for GroupNorm (Wu & He, 2018): the largest divisor of ``channels`` that is at most
    ``max_groups`` and leaves >= 2 channels per group (a 1-channel group of an MLP feature would
    normalize a single value to 0)."""
    limit = max(1, min(max_groups, channels // 2))
    return max(g for g in range(1, limit + 1) if channels % g == 0)


def _batch_norm(channels: int, spatial: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if spatial else nn.BatchNorm1d(channels)


def _re_batch_norm(channels: int, spatial: bool) -> nn.Module:
    return ReBN(channels)


def _group_norm(channels: int, spatial: bool) -> nn.Module:
    return nn.GroupNorm(group_count(channels), channels)


def _no_norm(channels: int, spatial: bool) -> nn.Module:
    return nn.Identity()


# name -> factory(channels, spatial); spatial inputs are (N, C, H, W), others (N, C)
NORMALIZATIONS: dict[str, Callable[[int, bool], nn.Module]] = {
    "bn": _batch_norm,
    "rebn": _re_batch_norm,
    "gn": _group_norm,
    "none": _no_norm,
}

# Not in-place: Hessian-vector products need a clean double backward.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
}

# Modules whose parameters weight perturbations exclude (docs/flatness.md).
NORMALIZATION_TYPES: tuple[type[nn.Module], ...] = (
    _BatchNorm,  # BatchNorm1d/2d/3d, SyncBatchNorm, ReBN
    _InstanceNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.RMSNorm,
    ReBN,
    InputNormalization,
)


def check_normalization(name: str) -> str:
    return one_of("normalization", name, NORMALIZATIONS)


def check_activation(name: str) -> str:
    return one_of("activation", name, ACTIVATIONS)


def make_normalization(name: str, channels: int, *, spatial: bool = True) -> nn.Module:
    return NORMALIZATIONS[check_normalization(name)](channels, spatial)


def make_activation(name: str) -> nn.Module:
    return ACTIVATIONS[check_activation(name)]()


def has_own_shift(normalization: str) -> bool:
    """Whether the normalization adds its own shift (a preceding conv/linear bias is redundant)."""
    return normalization != "none"
