"""Per-batch loss and error helpers shared by the trainers."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from advflat.performance import classification_error


def split_stats(prefix: str, logits: Tensor, y: Tensor, loss: Tensor) -> dict[str, Tensor]:
    return {
        f"{prefix}_loss": loss.detach(),
        f"{prefix}_error": classification_error(logits.detach(), y),
    }


def soft_cross_entropy(logits: Tensor, y: Tensor, label_smoothing: float) -> Tensor:
    return F.cross_entropy(logits, y, label_smoothing=label_smoothing)
