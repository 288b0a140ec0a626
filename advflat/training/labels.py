"""Label noise (docs/training.md#label-smoothing-and-label-noise) with τ = ``trainer.label_noise``.

Per batch (the paper's, the default): every global batch's labels are redrawn from the run's
data generator; each is replaced with probability τ by a class drawn uniformly from ALL K
classes, so it stays the true class with probability (1 − τ) + τ/K. Only the training loss sees
the drawn labels: the training attack targets the true ones. A drawn batch therefore carries
both as one (B, 2) tensor of *label pairs* (column 0 the true label, column 1 the label the loss
trains on). One tensor survives what happens to a batch on its way to the loss unchanged:
sharding over the ranks, Entropy-SGD's grouping and splitting, every update rule handing the same
``y`` to ``loss.inputs`` (which reads ``true_labels``) and ``loss.on`` (``training_labels``). A
plain (B,) label tensor is its own pair: without label noise, and wherever a loss is called on
plain labels (BN recalibration after EMA, tests), true and training labels coincide.

Per example (``trainer.label_noise_per_example``, a different experiment): each training
example's label is replaced once, from the run's seed, with probability τ by a uniformly drawn
*different* class and keeps it every epoch. It replaces the true label everywhere, attack
included, as a relabelled training set would.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from advflat.core import checks
from advflat.core.devices import to_device

TRUE, TRAINING = 0, 1  # the columns of label pairs


def label_pairs(true: Tensor, training: Tensor) -> Tensor:
    """(B, 2) label pairs from the true labels and the labels the loss trains on (B,)."""
    return torch.stack([true, training], dim=1)


def _column(y: Tensor, column: int) -> Tensor:
    if y.dim() == 1:
        return y
    if y.dim() == 2 and y.shape[1] == 2:
        return y[:, column]
    raise ValueError(f"labels must be (B,) or (B, 2) label pairs, got shape {tuple(y.shape)}")


def true_labels(y: Tensor) -> Tensor:
    """The true labels (B,) of labels or label pairs: what the training attack targets."""
    return _column(y, TRUE)


def training_labels(y: Tensor) -> Tensor:
    """The labels (B,) the training loss uses (and its statistics are measured against)."""
    return _column(y, TRAINING)


def resampled_labels(y: Tensor, tau: float, num_classes: int, generator: torch.Generator) -> Tensor:
    """Each label replaced with probability ``tau`` by a class drawn uniformly from all
    ``num_classes`` (the true class included); drawn on the CPU from ``generator``."""
    replaced = torch.rand(y.shape, generator=generator) < tau  # (B,)
    drawn = torch.randint(num_classes, y.shape, generator=generator)  # (B,)
    # Queued host-to-device copies: no wait for the GPU in the step loop.
    return torch.where(to_device(replaced, y.device), to_device(drawn, y.device), y)


def flipped_labels(y: Tensor, tau: float, num_classes: int, generator: torch.Generator) -> Tensor:
    """Each label replaced with probability ``tau`` by a uniformly drawn *different* class
    (the per-example experiment's draw: a replaced label is always wrong)."""
    if tau == 0:
        return y
    flip = torch.rand(y.shape, generator=generator) < tau  # (N,)
    offset = torch.randint(1, num_classes, y.shape, generator=generator)  # never 0: always wrong
    noisy = (y.cpu() + offset) % num_classes
    return torch.where(flip, noisy, y.cpu()).to(y.device)


@dataclass(frozen=True)
class BatchLabelNoise:
    """The per-batch label noise of one run: ``tau`` τ (0: none) over ``num_classes`` K."""

    tau: float
    num_classes: int

    def __post_init__(self) -> None:
        checks.in_range("label_noise", self.tau, 0.0, 1.0)
        checks.at_least("num_classes", self.num_classes, 1)

    def draw(self, y: Tensor, generator: torch.Generator) -> Tensor:
        """This batch's labels: label pairs with freshly drawn training labels (τ > 0), else
        ``y`` itself (nothing drawn: runs without label noise keep their random streams)."""
        if self.tau == 0:
            return y
        return label_pairs(y, resampled_labels(y, self.tau, self.num_classes, generator))

    def untouched(self, y: Tensor) -> Tensor:
        """Labels the noise leaves alone (pseudo-labels), in the format ``draw`` gives."""
        return y if self.tau == 0 else label_pairs(y, y)
