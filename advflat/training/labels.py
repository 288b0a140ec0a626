"""Label noise (docs/training.md#label-smoothing-and-label-noise): with probability τ an example's
label is replaced by another class.

Decision: the noisy labels are drawn ONCE per example from the run's seed (so the same example
keeps its wrong label every epoch, as in the paper's label-noise experiments); per-batch
resampling is available as an option of the trainer.
"""

from __future__ import annotations

import torch
from torch import Tensor


def noisy_labels(y: Tensor, tau: float, num_classes: int, generator: torch.Generator) -> Tensor:
    """Replace each label with a uniformly drawn *different* class with probability tau."""
    if tau == 0:
        return y
    flip = torch.rand(y.shape, generator=generator) < tau  # (N,)
    offset = torch.randint(1, num_classes, y.shape, generator=generator)  # never 0 → always wrong
    noisy = (y.cpu() + offset) % num_classes
    return torch.where(flip, noisy, y.cpu()).to(y.device)
