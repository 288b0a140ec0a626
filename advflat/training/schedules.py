"""Learning-rate schedules, stepped once per batch (so a schedule is a function of epoch time).

Each schedule is a small object built from conf/trainer/*.yaml (``trainer.scheduler``); the
trainer calls ``schedule(optimizer, steps_per_epoch, epochs)`` to get a torch ``LambdaLR``.
``factor(t)`` maps fractional epoch time t ∈ [0, epochs) to a multiplier of the base lr.
"""

from __future__ import annotations

import itertools
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from advflat.core import checks

log = logging.getLogger(__name__)


class Schedule(ABC):
    """Abstract base: subclasses give ``factor``; ``check`` rejects (or warns about) options
    that do not fit the run's ``epochs`` (called when the trainer builds the schedule, and by
    its probe)."""

    @abstractmethod
    def factor(self, t: float, epochs: int) -> float:
        """The lr multiplier at fractional epoch ``t`` of ``epochs``."""

    def check(self, epochs: int) -> None:  # noqa: B027 (optional hook, not abstract)
        """Raise ValueError, or warn, when an option contradicts ``epochs`` (nothing here)."""

    def __call__(self, optimizer: Optimizer, steps_per_epoch: int, epochs: int) -> LambdaLR:
        self.check(epochs)
        return LambdaLR(optimizer, lambda step: self.factor(step / steps_per_epoch, epochs))


class Constant(Schedule):
    """The base lr throughout."""

    def factor(self, t: float, epochs: int) -> float:
        return 1.0


class MultiStep(Schedule):
    """lr × gamma at each milestone epoch (strictly increasing). No defaults: the paper's ×0.1
    at 60, 90, 120 of 150 is set in conf/trainer/scheduler/multistep.yaml (its late schedule in
    late.yaml)."""

    def __init__(self, *, milestones: Sequence[int], gamma: float) -> None:
        if isinstance(milestones, str) or not isinstance(milestones, Sequence):
            raise ValueError(f"milestones must be a list of epochs, got {milestones!r}")
        for milestone in milestones:
            checks.positive("milestones", milestone)
        # Not sorted silently: [90, 60] is a typo as often as a shuffled list, and a repeated
        # epoch would decay by gamma² there.
        if any(a >= b for a, b in itertools.pairwise(milestones)):
            raise ValueError(
                f"milestones must be strictly increasing epochs, got {list(milestones)}"
            )
        self.milestones = list(milestones)
        self.gamma = checks.positive("gamma", gamma)
        self._warned = False

    def check(self, epochs: int) -> None:
        # A milestone at or after the last epoch never fires: the lr stays where it is. Short
        # trial runs of a long recipe (trainer.epochs=2) do this on purpose, so it is a warning,
        # said once per schedule (the trainer's probe and its real build both call this).
        late = [m for m in self.milestones if m >= epochs]
        if late and not self._warned:
            self._warned = True
            log.warning(
                "trainer.scheduler.milestones %s: %s at or after trainer.epochs (%d) never take "
                "effect, so the lr is not decayed there",
                list(self.milestones),
                late,
                epochs,
            )

    def factor(self, t: float, epochs: int) -> float:
        passed = sum(1 for milestone in self.milestones if t >= milestone)
        return self.gamma**passed


class Cyclic(Schedule):
    """Triangle 0 → peak → 0 over ``cycle_epochs`` (None: the whole run).

    The factor is relative to the optimizer's base lr, so the peak is given as an absolute lr.
    No defaults: the paper's peak lr 0.2 over the run's 30 epochs, relative to the optimizer's
    lr, is set in conf/trainer/scheduler/cyclic.yaml (and conf/experiment/paper/cyclic.yaml).
    """

    def __init__(self, *, peak_lr: float, base_lr: float, cycle_epochs: int | None) -> None:
        self.peak_lr = checks.positive("peak_lr", peak_lr)
        self.base_lr = checks.positive("base_lr", base_lr)
        self.cycle_epochs = (
            None if cycle_epochs is None else checks.at_least("cycle_epochs", cycle_epochs, 1)
        )

    def factor(self, t: float, epochs: int) -> float:
        length = self.cycle_epochs or epochs
        phase = min(t / length, 1.0)
        return self.peak_lr / self.base_lr * (1.0 - abs(2.0 * phase - 1.0))


class Cosine(Schedule):
    """Cosine annealing from the base lr to ``final`` × base lr (no default: the 0 used is set
    in conf/trainer/scheduler/cosine.yaml)."""

    def __init__(self, *, final: float) -> None:
        self.final = checks.non_negative("final", final)

    def factor(self, t: float, epochs: int) -> float:
        return self.final + (1.0 - self.final) * 0.5 * (
            1.0 + math.cos(math.pi * min(t / epochs, 1.0))
        )
