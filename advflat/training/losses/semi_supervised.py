"""Semi-supervised adversarial training (Carmon et al. 2019, "Unlabeled data improves adversarial
robustness"): pseudo-labelled extra images mixed into every batch.

Every batch of size B holds round(s·B) pseudo-labelled extra images and B − round(s·B) labelled
training images, s = ``unlabelled_share`` (paper: 0.7), shuffled together so that a clean part
(``fraction`` < 1) draws from both sources. An epoch has as many batches as one pass over the
labelled set at batch size B (so lr schedules and compute match plain AT); within an epoch
labelled and extra images are drawn without replacement from fresh permutations of the run's
data generator (no state crosses epochs, so resumed runs replay exactly). Label noise (either
kind) applies to the labelled images only; augmentation (by the trainer) to both.

``extra`` is the pseudo-labelled data: a ``PseudoLabelled`` reader (conf: a ``_partial_`` node,
so the 500k images are read when training starts, not when the config is checked), or anything
with ``load() -> Split``, or a ``Split``. The extra images stay on the CPU (6 GB as float32) and
each batch's share is moved to the training device.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from advflat.core import checks
from advflat.core.devices import to_device
from advflat.core.errors import ConfigError
from advflat.data.base import ImageData, Split
from advflat.training.losses.adversarial import AdversarialLoss
from advflat.training.losses.base import BatchPlan


def load_split(extra: Any) -> Split:
    """A Split from a Split, a reader with ``load()``, or a factory of either."""
    if isinstance(extra, Split):
        return extra
    if hasattr(extra, "load"):
        return load_split(extra.load())
    if callable(extra):
        return load_split(extra())
    raise ConfigError(f"extra must give a Split (a PseudoLabelled reader), got {extra!r}")


class SemiSupervisedLoss(AdversarialLoss):
    """The AT loss (all of ``AdversarialLoss``'s options) on batches with pseudo-labelled data."""

    unshown = ("extra",)

    def __init__(self, *, extra: Any, unlabelled_share: float, **adversarial: Any) -> None:
        super().__init__(**adversarial)
        if extra is None:
            raise ValueError("extra must be the pseudo-labelled data (a PseudoLabelled reader)")
        self.extra_source = extra
        self.unlabelled_share = checks.in_range("unlabelled_share", unlabelled_share, 0.0, 1.0)
        if unlabelled_share == 1.0:
            raise ValueError("unlabelled_share must be < 1 (a batch needs labelled images)")
        self.extra: Split | None = None

    def prepare(self, model: nn.Module, data: ImageData, device: torch.device) -> None:
        if self.extra is None:
            self.extra = load_split(self.extra_source)
        if tuple(self.extra.x.shape[1:]) != tuple(data.input_shape):
            raise ConfigError(
                f"extra images have shape {tuple(self.extra.x.shape[1:])}, the dataset's "
                f"{tuple(data.input_shape)}"
            )

    def shares(self, batch_size: int) -> tuple[int, int]:
        """(labelled, extra) images per batch."""
        extra = round(self.unlabelled_share * batch_size)
        return batch_size - extra, extra

    def draw(
        self, plan: BatchPlan, data: ImageData, labels: Tensor
    ) -> Iterator[tuple[Tensor, Tensor]]:
        assert self.extra is not None, "prepare() loads the extra data"
        steps = data.train.num_batches(plan.batch_size, drop_last=plan.drop_last)
        n_labelled, n_extra = self.shares(plan.batch_size)
        n_labelled = min(n_labelled, len(labels))
        labelled = torch.randperm(len(labels), generator=plan.generator)
        extra = _draws(len(self.extra), steps * n_extra, plan.generator)
        device = data.train.x.device
        for i in range(steps):
            mine = to_device(labelled[i * n_labelled : (i + 1) * n_labelled], device)
            theirs = extra[i * n_extra : (i + 1) * n_extra]
            y_labelled = plan.relabel(labels[mine])
            # The extra images live on the CPU: queued copies, no wait for the GPU.
            x = torch.cat([data.train.x[mine], to_device(self.extra.x[theirs], device)])
            y_extra = plan.untouched(to_device(self.extra.y[theirs], device))  # pseudo-labels
            y = torch.cat([y_labelled, y_extra])
            order = to_device(torch.randperm(len(y), generator=plan.generator), device)
            yield x[order], y[order]  # the global batch; the trainer augments and shards it


def _draws(n: int, count: int, generator: torch.Generator) -> Tensor:
    """``count`` indices into range(n), without replacement as long as count <= n."""
    rounds = -(-count // n) if count else 0
    draws = [torch.randperm(n, generator=generator) for _ in range(rounds)]
    return torch.cat(draws)[:count] if draws else torch.zeros(0, dtype=torch.long)
