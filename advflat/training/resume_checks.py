"""Checking ``last.pt`` against the run it resumes, before any of it is loaded.

A resumed run takes its model, optimizer, lr schedule, EMA, method state and RNG states from
the file, so each is compared with what this run built (the same keys, tensor shapes and
dtypes, kinds of values) and its numbers with their ranges (the epoch within the run's
``trainer.epochs``, learning rates finite and ≥ 0). The run's history.json, which the resumed run
extends, is checked too. A file that fails is one ConfigError line naming it and the key;
nothing has been loaded nor written by then.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch.optim import Optimizer

from advflat.core.schema import fail, join, like, mapping, number, tensor

if TYPE_CHECKING:
    from torch import nn

    from advflat.training.run_directory import RunDirectory
    from advflat.training.trainer import Trainer

REQUIRED = ("epoch", "model", "optimizer", "scheduler", "rng")
# Per-group kernel choices differ between devices and are kept from this run, never the file's.
KERNEL_FLAGS = {"fused", "foreach", "capturable", "differentiable"}


def check_resume_state(trainer: Trainer, model: nn.Module, state: dict, run: RunDirectory) -> None:
    """Refuse ``state`` (read from ``run``'s last.pt) unless every part fits ``trainer`` and
    ``model``, and ``run``'s history.json unless it is one advflat could have written."""
    run.history()  # checks every entry
    where = f"checkpoint {run.last_checkpoint}"
    for key in REQUIRED:
        if key not in state:
            fail(where, key, "is missing: this is not a last.pt advflat can resume from")
    number(state["epoch"], where, "epoch", 1, trainer.epochs, integer=True)
    like(state["model"], model.state_dict(), where, "model")
    check_optimizer(state["optimizer"], trainer.optimizer, where)
    like(state["scheduler"], trainer.scheduler.state_dict(), where, "scheduler")
    for index, rate in enumerate(state["scheduler"].get("base_lrs", [])):
        learning_rate(rate, where, join("scheduler.base_lrs", index))
    if trainer.ema is not None and state.get("ema") is not None:
        like(state["ema"], trainer.ema.state_dict(), where, "ema")
        number(int(state["ema"]["n_averaged"]), where, "ema.n_averaged", low=0)
    check_method(state.get("method") or {}, trainer.method_state(), state["epoch"], where)
    check_rng(state["rng"], trainer.generator, where, "rng")
    ranks = state.get("rng_ranks") or []
    if not isinstance(ranks, list):
        fail(where, "rng_ranks", f"must be a list, got {type(ranks).__name__}")
    for index, rank in enumerate(ranks):
        check_rng(rank, None, where, join("rng_ranks", index))


def check_optimizer(stored: Any, optimizer: Optimizer, where: str) -> None:
    """The same parameter groups, and per-parameter state (momentum, Adam's moments) shaped
    like the parameter it belongs to."""
    current = optimizer.state_dict()
    mapping(stored, where, "optimizer")
    for key in ("state", "param_groups"):
        if key not in stored:
            fail(where, f"optimizer.{key}", "is missing")
    groups = stored["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(current["param_groups"]):
        fail(where, "optimizer.param_groups", f"must be {len(current['param_groups'])} groups")
    for index, (group, own) in enumerate(zip(groups, current["param_groups"], strict=True)):
        key = join("optimizer.param_groups", index)
        mapping(group, where, key)
        like(_without_kernels(group), _without_kernels(own), where, key)
        if group["params"] != own["params"]:
            fail(where, f"{key}.params", f"must be {own['params']}, got {group['params']}")
        learning_rate(group["lr"], where, f"{key}.lr")
    check_optimizer_state(stored["state"], optimizer, where)


def check_optimizer_state(stored: Any, optimizer: Optimizer, where: str) -> None:
    """Per-parameter state: tensors shaped like their parameter, or numbers (a step count)."""
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    if not isinstance(stored, dict):
        fail(where, "optimizer.state", "must be a mapping")
    for index, entries in stored.items():
        key = f"optimizer.state[{index!r}]"
        if not isinstance(index, int) or not 0 <= index < len(parameters):
            fail(where, key, f"names no parameter (this run has {len(parameters)})")
        for name, value in mapping(entries, where, key).items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                tensor(value, where, join(key, name), parameters[index].shape)
            elif not isinstance(value, torch.Tensor) and value is not None:
                number(value, where, join(key, name))


def learning_rate(value: Any, where: str, key: str) -> None:
    """A learning rate: a finite number ≥ 0 (torch would take a negative or infinite one)."""
    number(value, where, key, 0.0, math.inf)
    if not math.isfinite(value):
        fail(where, key, f"must be finite, got {value!r}")


def _without_kernels(group: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in group.items() if key not in KERNEL_FLAGS}


def check_method(stored: Any, reference: dict[str, Any], epoch: int, where: str) -> None:
    """The loss's, the update's and early stopping's state, each shaped like this run's."""
    for name, value in mapping(stored, where, "method").items():
        if name not in reference:
            fail(where, join("method", name), "is not part of this run's training method")
        like(value, reference[name], where, join("method", name))
    best = stored.get("early_stopping")
    if isinstance(best, dict):
        number(best["best_epoch"], where, "method.early_stopping.best_epoch", 0, epoch)


def check_rng(stored: Any, generator: torch.Generator | None, where: str, key: str) -> None:
    """RNG states of the kind this torch writes (``generator``: the data generator too)."""
    mapping(stored, where, key)
    if "torch" not in stored:
        fail(where, join(key, "torch"), "is missing")
    own = torch.get_rng_state()
    tensor(stored["torch"], where, join(key, "torch"), own.shape, own.dtype)
    if generator is not None:
        if "data" not in stored:
            fail(where, join(key, "data"), "is missing")
        data = generator.get_state()
        tensor(stored["data"], where, join(key, "data"), data.shape, data.dtype)
    cuda = stored.get("cuda")
    if cuda is not None:
        if not isinstance(cuda, list):
            fail(where, join(key, "cuda"), f"must be a list, got {type(cuda).__name__}")
        for index, value in enumerate(cuda):
            tensor(value, where, join(join(key, "cuda"), index), dtype=torch.uint8)
