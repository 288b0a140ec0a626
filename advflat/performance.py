"""Clean and robust loss/error: the one implementation behind the training loop's per-epoch
curves, early stopping and the evaluation's clean/robust metrics."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from advflat.attacks.base import Attack
from advflat.data.base import Split
from advflat.statistics import RunningMeans


def classification_error(logits: Tensor, y: Tensor) -> Tensor:
    """Fraction of wrong top-1 predictions (a 0-dim tensor, no host sync)."""
    return (logits.argmax(dim=1) != y).float().mean()


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
        stats.update(robust_batch(model, x, y, attack))
    return stats


@torch.no_grad()
def robust_batch(model: nn.Module, x: Tensor, y: Tensor, attack: Attack) -> dict[str, Tensor]:
    """Mean CE and error at the attack's adversarial examples of one batch."""
    logits = model(attack(model, x, y))  # (B, K)
    return {
        "robust_loss": F.cross_entropy(logits, y),
        "robust_error": classification_error(logits, y),
    }


def robust_loss_and_error(
    model: nn.Module, examples: Split, attack: Attack, batch_size: int, desc: str = "attack"
) -> tuple[float, float]:
    """Mean CE and error at the attack's adversarial examples over a split (one host read)."""
    means = RunningMeans()
    total = examples.num_batches(batch_size)
    batches = tqdm(examples.batches(batch_size), total=total, desc=desc, leave=False, disable=None)
    for x, y in batches:
        means.add(robust_batch(model, x, y, attack), len(y))
    result = means.means()
    return result["robust_loss"], result["robust_error"]
