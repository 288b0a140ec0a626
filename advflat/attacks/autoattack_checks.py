"""Sanity checks AutoAttack runs before attacking: they flag models whose evaluation would be
unreliable (Croce & Hein's "flags" of a broken evaluation) with a warning, never an error.
"""

from __future__ import annotations

import logging
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)


class AutoAttackSanityWarning(UserWarning):
    """The model looks like it could fool the attacks (or itself): read the evaluation warily."""


def _warn(message: str) -> None:
    log.warning(message)
    warnings.warn(message, AutoAttackSanityWarning, stacklevel=3)


def check_logits(outputs: Tensor) -> None:
    """Outputs that are non-negative with rows summing to 1 are probabilities, not logits."""
    rows = outputs.sum(dim=1)
    if (outputs >= 0).all() and torch.allclose(rows, torch.ones_like(rows), atol=1e-5):
        _warn(
            "the model outputs look like probabilities (non-negative, rows sum to 1); "
            "AutoAttack's losses expect logits: remove the final softmax"
        )


def check_deterministic(model: nn.Module, x: Tensor, first: Tensor) -> None:
    """Two forward passes on the same input should agree (no dropout, no random defence)."""
    with torch.no_grad():
        second = model(x)
    scale = first.abs().amax().clamp_min(1.0)
    if (second - first).abs().amax() > 1e-5 * scale:
        _warn(
            "two forward passes on the same input differ (a randomised model, or one in train "
            "mode): AutoAttack assumes a deterministic model; evaluate in eval mode or use "
            "expectation over transformation"
        )


def check_gradients(model: nn.Module, x: Tensor, y: Tensor) -> None:
    """Zero input gradients (at correctly classified points) suggest gradient masking."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    zero = (grad.flatten(1).abs().amax(dim=1) == 0).float().mean().item()
    if zero > 0:
        _warn(
            f"{zero:.0%} of the checked examples have an all-zero input gradient: gradient "
            "masking makes gradient-based attacks (APGD, FAB) unreliable"
        )


def sanity_checks(model: nn.Module, x: Tensor, y: Tensor) -> None:
    """All three checks on a few examples (x already on the model's device)."""
    with torch.no_grad():
        outputs = model(x)  # (B, K)
    check_logits(outputs)
    check_deterministic(model, x, outputs)
    check_gradients(model, x, y)
