"""A forked torch RNG: code inside runs on its own seed and leaves the caller's streams alone.

Both per-metric streams (``advflat.evaluation.seeds``) and AutoAttack's per-batch seeds need it;
it lives here, below both, so neither package imports the other for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Run with torch's RNG (CPU, and ``device`` when it is a GPU) seeded with ``seed``; the
    caller's RNG state is restored afterwards."""
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
