"""Per-batch loss and error, shared by the training loop's logs and the evaluation metrics."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advflat.attacks.base import Attack


def classification_error(logits: Tensor, y: Tensor) -> Tensor:
    """Fraction of wrong top-1 predictions (a 0-dim tensor, no host sync)."""
    return (logits.argmax(dim=1) != y).float().mean()


@torch.no_grad()
def batch_performance(
    model: nn.Module, x: Tensor, y: Tensor, attack: Attack | None
) -> dict[str, Tensor]:
    """Mean clean (and, with an attack, adversarial) loss and error on one batch."""
    logits = model(x)  # (B, K)
    stats = {
        "clean_loss": F.cross_entropy(logits, y),
        "clean_error": classification_error(logits, y),
    }
    if attack is not None:
        adversarial = model(attack(model, x, y))  # (B, K)
        stats["adversarial_loss"] = F.cross_entropy(adversarial, y)
        stats["adversarial_error"] = classification_error(adversarial, y)
    return stats
