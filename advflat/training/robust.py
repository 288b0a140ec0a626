"""What every method that trains against an input attack shares (SPEC §1).

- The attack runs in eval mode by default (running BN statistics; ``attack_in_eval_mode``); the
  training loss then comes from ONE train-mode forward pass (each method's ``loss``).
- Weight clipping: |w| <= ``weight_clipping`` after every optimizer step.
- Early stopping on the held-out robust error (``early_stopping``), with ``checkpoints/best.pt``.
- Method state (early stopping's best error, Entropy-SGD's step count, the rotation head, ...)
  travels in ``last.pt`` so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from torch import Tensor, nn

from advflat import checks
from advflat.attacks.base import Objective, cross_entropy
from advflat.attacks.none import NoAttack
from advflat.data.base import ImageData
from advflat.training import checkpoint
from advflat.training.early_stopping import EarlyStopping
from advflat.training.run_directory import RunDirectory
from advflat.training.trainer import Trainer
from advflat.training.weight_clipping import clip_weights

log = logging.getLogger(__name__)


class RobustTraining(Trainer):
    """Base class of the adversarial training methods (AT, TRADES, MART, AWP, ...).

    Subclasses implement ``loss`` (and ``inputs``, what the train-mode forward sees) with
    ``attacked`` for the adversarial examples. Method state that must survive a restart goes
    through ``method_state`` / ``load_method_state``.
    """

    def __init__(
        self,
        *,
        attack_in_eval_mode: bool = True,
        weight_clipping: float | None = None,
        early_stopping: EarlyStopping | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if self.attack is None or isinstance(self.attack, NoAttack):
            raise ValueError("attack must be an input attack for adversarial training, got none")
        self.attack_in_eval_mode = attack_in_eval_mode
        if weight_clipping is not None:
            checks.positive("weight_clipping", weight_clipping)
        self.weight_clipping = weight_clipping
        if early_stopping is not None and self.ema_decay is not None:
            # best.pt holds the raw weights of one epoch; an average over epochs is another model.
            raise ValueError("early_stopping cannot be combined with ema_decay (choose one)")
        self.early_stopping = early_stopping

    # ---- attacks --------------------------------------------------------------------------
    @contextlib.contextmanager
    def attack_mode(self, model: nn.Module) -> Iterator[None]:
        """The model in the attack's mode for the duration (the caller's mode restored)."""
        was_training = model.training
        model.train(not self.attack_in_eval_mode)
        try:
            yield
        finally:
            model.train(was_training)

    def attacked(
        self, model: nn.Module, x: Tensor, target: Tensor, objective: Objective = cross_entropy
    ) -> Tensor:
        """Adversarial versions of x maximising ``objective(logits, target)`` (attack mode)."""
        with self.attack_mode(model):
            return self.attack(model, x, target, objective)

    # ---- hooks ----------------------------------------------------------------------------
    def after_step(self, model: nn.Module) -> None:
        if self.weight_clipping is not None:
            clip_weights(model, self.weight_clipping)  # before EMA: the average sees clipped w
        super().after_step(model)

    def after_epoch(
        self, model: nn.Module, data: ImageData, run: RunDirectory, epoch: int
    ) -> dict[str, float]:
        stats = super().after_epoch(model, data, run, epoch)
        if self.early_stopping is not None:
            stats.update(self.early_stopping.update(model, data, run, epoch))
        return stats

    def method_state(self) -> dict[str, Any]:
        """Plain containers and tensors (``weights_only``-safe) that a resumed run needs."""
        if self.early_stopping is None:
            return {}
        return {"early_stopping": self.early_stopping.state_dict()}

    def load_method_state(self, state: dict[str, Any]) -> None:
        if self.early_stopping is not None and "early_stopping" in state:
            self.early_stopping.load_state_dict(state["early_stopping"])

    # ---- checkpoints: method state in last.pt (see the report: a Trainer hook would do) ---
    def _state(self, model: nn.Module, epoch: int, run: RunDirectory) -> dict[str, Any]:
        state = super()._state(model, epoch, run)
        state["method"] = self.method_state()
        return state

    def _resume(self, model: nn.Module, run: RunDirectory) -> int:
        start = super()._resume(model, run)
        if start > 1:
            self.load_method_state(checkpoint.read(run.last_checkpoint).get("method") or {})
        return start

    def _final_model(
        self, model: nn.Module, data: ImageData, run: RunDirectory, labels: Tensor
    ) -> nn.Module:
        # Ranks > 0 skip it: their model is not evaluated and best.pt may still be in flight.
        if self.early_stopping is not None and run.writes:
            self.early_stopping.restore_best(model, run)
        return super()._final_model(model, data, run, labels)
