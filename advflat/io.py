"""Atomic writes: a reader (or a killed writer) never sees a half-written file.

Write to a temporary file in the same directory, fsync, then ``os.replace`` (atomic on POSIX).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch


def _atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        # SIGKILL cannot be caught, but then only the hidden .tmp file is left behind.
        Path(tmp).unlink(missing_ok=True)
        raise


def save_json(path: Path | str, data: Any, sort_keys: bool = True) -> None:
    """``sort_keys=False`` for configs: the order of a config's nodes can carry meaning (an
    evaluation's metrics run in the order they are listed)."""
    save_text(path, json.dumps(data, indent=2, sort_keys=sort_keys) + "\n")


def save_torch(path: Path | str, data: Any) -> None:
    _atomic(Path(path), lambda handle: torch.save(data, handle))


def save_text(path: Path | str, text: str) -> None:
    _atomic(Path(path), lambda handle: handle.write(text.encode()))
