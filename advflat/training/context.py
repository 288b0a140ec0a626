"""What a loss and an update rule may use of the trainer: a small context, not the trainer.

``train_forward`` is the train-mode forward of the run's training module whose loss is
backpropagated (through DDP with several processes, through ``torch.compile`` with
``fast.compile``); ``plain_forward`` is the same module called as it is, in its current mode
(weight ascent, curricula: no DDP hooks). The training module is the model, or the model with a
loss's extra head (rotation). ``attack_mode`` puts the
model in the attack's mode, ``autocast`` is the fast path's bf16 context. The collectives an
algorithm needs (``average_``, ``broadcast_``) are the distributed layer's, passed through.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from advflat.training.distributed import Distributed


@dataclass(eq=False)
class TrainingContext:
    """The trainer's services for one run (``Trainer.prepare`` builds it)."""

    label_smoothing: float = 0.0
    attack_in_eval_mode: bool = True
    distributed: Distributed = field(default_factory=Distributed.single)
    generator: torch.Generator = field(default_factory=torch.Generator)
    module: nn.Module | None = None  # the training module (None: nothing prepared)
    forward: nn.Module | None = None  # the same, wrapped for training (DDP, compiled)
    optimizer: Optimizer | None = None
    scheduler: Any = None
    autocast_factory: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext

    # ---- forwards and modes ----------------------------------------------------------------
    def train_forward(self, x: Tensor) -> Any:
        """The train-mode forward whose loss is backpropagated."""
        assert self.forward is not None, "Trainer.prepare builds the training forward"
        self.forward.train()  # the wrappers (DDP, compiled) pass the mode on to the model
        return self.forward(x)

    def plain_forward(self, x: Tensor) -> Any:
        """The training module in its current mode, without DDP or compilation."""
        assert self.module is not None, "Trainer.prepare sets the training module"
        return self.module(x)

    @contextlib.contextmanager
    def attack_mode(self, model: nn.Module) -> Iterator[None]:
        """The model in the attack's mode for the duration (the caller's mode restored)."""
        was_training = model.training
        model.train(not self.attack_in_eval_mode)
        try:
            yield
        finally:
            model.train(was_training)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return self.autocast_factory()

    def criterion(self, logits: Tensor, y: Tensor) -> Tensor:
        """The training cross-entropy (with the trainer's label smoothing)."""
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)

    # ---- the optimizer and the collectives ------------------------------------------------
    def zero_grad(self) -> None:
        assert self.optimizer is not None, "Trainer.prepare builds the optimizer"
        self.optimizer.zero_grad(set_to_none=True)

    def optimizer_step(self) -> None:
        """One optimizer step and one step of the per-batch lr schedule."""
        assert self.optimizer is not None, "Trainer.prepare builds the optimizer"
        self.optimizer.step()
        self.scheduler.step()

    def parameters(self) -> list[nn.Parameter]:
        """The parameters the optimizer updates (the model's, and a loss's extra heads)."""
        assert self.optimizer is not None, "Trainer.prepare builds the optimizer"
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def average_(self, tensors: list[Tensor]) -> None:
        """In place: the mean over the job's processes (nothing with one process)."""
        self.distributed.average_(tensors)

    def broadcast_(self, tensors: list[Tensor]) -> None:
        """In place: rank 0's values on every process (nothing with one process)."""
        self.distributed.broadcast_(tensors)

    def shard(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        """This process's share of tensors drawn for the global batch."""
        return self.distributed.shard(*tensors)
