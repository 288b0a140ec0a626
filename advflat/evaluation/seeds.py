"""Per-metric random streams: each metric draws from a seed derived from (run seed, its name).

Switching one metric off (``evaluation.metrics.NAME=null``) or reordering the metrics must not
change what the others measure, so no metric may consume a random stream another one reads.
The derivation is a cryptographic hash of the name, stable across processes and Python
versions (Python's own ``hash()`` of a string is salted per process).
"""

from __future__ import annotations

import contextlib
import hashlib

import torch

from advflat.core.rng import seeded_rng


def derived_seed(seed: int, name: str) -> int:
    """A 63-bit seed from ``seed`` and ``name``; different names give unrelated streams."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seeded_stream(
    seed: int, name: str, device: torch.device | None = None
) -> contextlib.AbstractContextManager[None]:
    """Run with torch's RNG (CPU, and ``device`` when it is a GPU) seeded from (seed, name);
    the caller's RNG state is restored afterwards."""
    return seeded_rng(derived_seed(seed, name), device)
