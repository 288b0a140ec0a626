"""AutoAttack's progress on disk, so an interrupted evaluation continues where it stopped.

The state is a plain dict (tensors on the CPU, lists, strings, floats) saved atomically with
``advflat.core.io.save_torch`` after every batch and loadable with
``torch.load(weights_only=True)``.
A fingerprint of the threat model, the components, the inputs and the model's weights guards
against continuing someone else's evaluation: a mismatch starts afresh (with a warning).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from advflat.core.errors import ConfigError
from advflat.core.io import save_torch
from advflat.core.loading import load_torch

log = logging.getLogger(__name__)

FORMAT = 1
WHAT = "AutoAttack state"


@dataclass
class AutoAttackState:
    """Where an evaluation stands: the adversarial examples and robust mask so far (N rows),
    the finished components, and the examples the current component still has to attack."""

    x_adv: Tensor  # (N, ...)
    robust: Tensor  # (N,) bool: correctly classified at x and at every attack so far
    robust_counts: dict[str, int]  # robust examples after "clean" and each finished component
    finished: list[str] = field(default_factory=list)
    component: str | None = None  # the component in progress
    pending: Tensor | None = None  # (P,) indices it still has to attack


def fingerprint(
    model: nn.Module, x: Tensor, y: Tensor, epsilon: float, norm: str, components: list[str]
) -> dict:
    """Cheap checksums: equal for the same evaluation, different for another model or data."""
    with torch.no_grad():
        tensors = [*model.parameters(), *model.buffers()]  # BN statistics count too
        weights = sum(float(t.double().sum()) for t in tensors)
        return {
            "format": FORMAT,
            "epsilon": float(epsilon),
            "norm": norm,
            "components": list(components),
            "shape": list(x.shape),
            "inputs": float(x.double().sum()),
            "labels": int(y.sum()),
            "weights": weights,
        }


def _same(saved: dict, current: dict) -> bool:
    for key, value in current.items():
        other = saved.get(key)
        if isinstance(value, float):
            if not isinstance(other, float) or not math.isclose(value, other, rel_tol=1e-9):
                return False
        elif other != value:
            return False
    return True


def save_state(path: str | Path, state: AutoAttackState, stamp: dict) -> None:
    save_torch(
        path,
        {
            "fingerprint": stamp,
            "x_adv": state.x_adv.detach().cpu(),
            "robust": state.robust.cpu(),
            "robust_counts": dict(state.robust_counts),
            "finished": list(state.finished),
            "component": state.component,
            "pending": None if state.pending is None else state.pending.cpu(),
        },
    )


def load_state(path: str | Path, stamp: dict, device: torch.device) -> AutoAttackState | None:
    """The saved state if it belongs to this evaluation, else None (a file that is not an
    AutoAttack state, or holds anything but tensors and plain values, is a ConfigError)."""
    if not Path(path).exists():
        return None
    saved = load_torch(path, WHAT)
    check_layout(saved, path)
    if not _same(saved["fingerprint"], stamp):
        message = f"AutoAttack state {path} belongs to another evaluation; starting afresh"
        log.warning(message)
        warnings.warn(message, UserWarning, stacklevel=3)
        return None
    pending = saved["pending"]
    log.info("AutoAttack resumes from %s (finished: %s)", path, saved["finished"] or "none")
    return AutoAttackState(
        x_adv=saved["x_adv"].to(device),
        robust=saved["robust"].to(device),
        robust_counts=dict(saved["robust_counts"]),
        finished=list(saved["finished"]),
        component=saved["component"],
        pending=None if pending is None else pending.to(device),
    )


def check_layout(saved: object, path: str | Path) -> None:
    """Refuse a file whose entries are not what ``save_state`` writes (one line, the key)."""
    if not isinstance(saved, dict):
        raise ConfigError(f"{WHAT} {path} is not a mapping; delete it to start afresh.")
    expected = {
        "fingerprint": lambda v: isinstance(v, dict),
        "x_adv": lambda v: isinstance(v, Tensor),
        "robust": lambda v: isinstance(v, Tensor) and v.dtype == torch.bool,
        "robust_counts": lambda v: (
            isinstance(v, dict)
            and all(isinstance(k, str) and isinstance(n, int) for k, n in v.items())
        ),
        "finished": lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v),
        "component": lambda v: v is None or isinstance(v, str),
        "pending": lambda v: v is None or isinstance(v, Tensor),
    }
    for key, valid in expected.items():
        if key not in saved or not valid(saved[key]):
            raise ConfigError(
                f"{WHAT} {path} has no valid {key!r} entry; delete it to start afresh."
            )
