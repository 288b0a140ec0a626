"""Divergence: a training statistic or weight that is not finite stops the run.

A diverged run (the loss NaN or infinite after too large an lr) would otherwise train on for all
its epochs, save NaN weights over the last good ``last.pt`` and end with an evaluation of NaN.
The step loop must not wait for the GPU, so nothing is read per step: ``DivergenceWatch`` keeps,
on the device, the first batch of the epoch whose statistics were not all finite. The trainer
reads it once at the end of the epoch, after the epoch's means (which already wait for the
GPU), together with whether the weights are still finite; a diverged epoch is logged with
``diagnostics/diverged: 1`` and never saved, so ``last.pt`` keeps the last good epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from advflat.core.errors import ConfigError

# The first bad batch of an epoch is a minimum over batches: "none yet" is larger than any.
NO_BATCH = 2**62
DIVERGED = "diagnostics/diverged"


class TrainingDivergedError(ConfigError):
    """Training stopped at a non-finite loss or weight; the message says where and what to try.

    A ``ConfigError``: the cure is an option (the lr, mostly), so the command line prints the
    one line and exits with status 2, like any unusable option.
    """


class DivergenceWatch:
    """The first batch of one epoch whose statistics were not all finite, kept on the device."""

    def __init__(self) -> None:
        self.batches = 0
        self._first: Tensor | None = None

    def add(self, stats: Mapping[str, Tensor]) -> None:
        """Count one batch and remember it if any of its statistics is not finite (no sync)."""
        self.batches += 1
        if not stats:
            return
        values = torch.stack([value.detach().float().reshape(()) for value in stats.values()])
        here = torch.where(torch.isfinite(values).all(), NO_BATCH, self.batches)
        self._first = here if self._first is None else torch.minimum(self._first, here)

    def read(self, weights: Iterable[Tensor]) -> tuple[int | None, bool]:
        """The first non-finite batch (1-based; None: every batch was finite) and whether all
        ``weights`` are finite, in one read of the device."""
        flags = [torch.isfinite(w.detach()).all() for w in weights if w.is_floating_point()]
        first = self._first
        device = first.device if first is not None else flags[0].device if flags else None
        if first is None:
            first = torch.full((), NO_BATCH, device=device)
        finite = torch.stack(flags).all() if flags else torch.ones((), dtype=torch.bool)
        batch, weights_finite = torch.stack([first, finite.to(first.device).long()]).tolist()
        return (None if batch == NO_BATCH else int(batch)), bool(weights_finite)


def _losses_first(item: tuple[str, float]) -> bool:
    return not item[0].endswith("loss")


def non_finite(stats: Mapping[str, float]) -> dict[str, float]:
    """The statistics of ``stats`` that are not finite (losses first: they say most)."""
    bad = {key: value for key, value in stats.items() if not math.isfinite(value)}
    return dict(sorted(bad.items(), key=_losses_first))


def diverged_message(
    epoch: int, batch: int | None, bad: Mapping[str, float], lr: float, last_good: int
) -> str:
    """The one line a diverged run ends with: where, which value, the lr, what to try."""
    where = f"epoch {epoch}, batch {batch}" if batch is not None else f"the end of epoch {epoch}"
    what = next(iter(bad.items()), None)
    value = "weights not finite" if what is None else f"{what[0]} {what[1]}"
    kept = (
        f"checkpoints/last.pt keeps epoch {last_good}"
        if last_good
        else "no epoch finished, so nothing was saved"
    )
    return (
        f"training diverged at {where} ({value}, lr {lr:.4g}): lower trainer.optimizer.lr "
        f"(or the schedule's peak_lr), or warm up with trainer.epsilon_warmup_epochs; {kept}"
    )
