"""Weight clipping (docs/training.md#weight-clipping): every parameter is clipped to [-w_max,
w_max] after each step.

All parameters are clipped, normalization layers included: the paper's models use rebn, whose
effective scale is 1 + weight, so a clipped weight still leaves the scale near 1 (with plain BN
a small w_max would cap the BN scale itself; use ``model.normalization=rebn``).
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def clip_weights(model: nn.Module, w_max: float) -> None:
    """In place: |w| <= w_max for every parameter of ``model``."""
    for parameter in model.parameters():
        parameter.clamp_(-w_max, w_max)
