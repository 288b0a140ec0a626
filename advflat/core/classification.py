"""Clean and robust loss/error of one batch.

The training loop's per-epoch curves and early stopping take batch means from here (and weight
them by batch size, ``advflat.core.statistics.RunningMeans``); the evaluation's robust metrics take
the per-example values of the same attacked batches (``advflat.evaluation.reference``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advflat.attacks.base import Attack


def misclassified(logits: Tensor, y: Tensor) -> Tensor:
    """Per-example wrong top-1 prediction (B,), boolean."""
    return logits.argmax(dim=1) != y


def classification_error(logits: Tensor, y: Tensor) -> Tensor:
    """Fraction of wrong top-1 predictions (a 0-dim tensor, no host sync)."""
    return misclassified(logits, y).float().mean()


@dataclass(frozen=True)
class AdversarialLogits:
    """The model's logits (B, K) at an attack's adversarial examples of one batch; labels (B,)."""

    logits: Tensor
    y: Tensor

    def losses(self) -> Tensor:
        """Per-example cross-entropy (B,)."""
        return F.cross_entropy(self.logits, self.y, reduction="none")

    def errors(self) -> Tensor:
        """Per-example misclassification (B,), boolean."""
        return misclassified(self.logits, self.y)

    def means(self) -> dict[str, Tensor]:
        """Batch means ``robust_loss`` and ``robust_error`` (0-dim tensors, no host sync)."""
        # cross_entropy's own mean reduction, not losses().mean(): the two sum in different
        # orders, and the training curves have always been the former to the last bit.
        return {
            "robust_loss": F.cross_entropy(self.logits, self.y),
            "robust_error": classification_error(self.logits, self.y),
        }


@torch.no_grad()
def adversarial_logits(model: nn.Module, x: Tensor, y: Tensor, attack: Attack) -> AdversarialLogits:
    """Attack one batch (the attack enables the input gradients it needs) and keep the logits."""
    return AdversarialLogits(model(attack(model, x, y)), y)


@torch.no_grad()
def batch_performance(
    model: nn.Module, x: Tensor, y: Tensor, attack: Attack | None
) -> dict[str, Tensor]:
    """Mean clean (and, with an attack, robust) loss and error on one batch."""
    logits = model(x)  # (B, K)
    stats = {
        "clean_loss": F.cross_entropy(logits, y),
        "clean_error": classification_error(logits, y),
    }
    if attack is not None:
        stats.update(adversarial_logits(model, x, y, attack).means())
    return stats
