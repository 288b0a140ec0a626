"""Atomic writes: a reader (or a killed writer) never sees a half-written file.

Write to a temporary file in the same directory, fsync, then ``os.replace`` (atomic on POSIX).
A write that fails (a full or read-only disk) removes its temporary file and leaves the old file
as it was; a full or read-only disk is one ``WriteError`` line naming the device and the file.

JSON is written strictly (RFC 8259): a non-finite float (NaN, ±Infinity) becomes ``null``, so
every reader, not only Python's, can parse what advflat writes. Metrics say which of their
values were not finite (``advflat.core.strict_json.metrics_for_json``).
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from advflat.core.errors import ConfigError
from advflat.core.strict_json import finite

# The errors that mean "this disk takes no more bytes": the user's to fix, not a bug.
NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
READ_ONLY = {errno.EROFS}
# torch.save reports a failed write from its C++ zip writer as a RuntimeError, errno lost.
TORCH_WRITE_FAILED = ("inline_container", "PytorchStreamWriter")


class WriteError(ConfigError):
    """A file could not be written because of its disk (full, over quota or read-only)."""


def mount_point(path: Path) -> Path:
    """The mount point (the device, as users know it) that ``path`` is on."""
    path = Path(os.path.abspath(path))
    while not os.path.ismount(path) and path.parent != path:
        path = path.parent
    return path


def disk_error(path: Path, error: BaseException) -> WriteError | None:
    """The one-line error for a write of ``path`` that failed because of its disk, else None."""
    code = getattr(error, "errno", None)
    device = mount_point(path.parent)
    if code in READ_ONLY:
        return WriteError(
            f"{device} is a read-only file system: could not write {path}; nothing was overwritten"
        )
    torch_failed = isinstance(error, RuntimeError) and any(
        word in str(error) for word in TORCH_WRITE_FAILED
    )
    if code in NO_SPACE or torch_failed:
        return WriteError(
            f"no space left on {device} while writing {path}; nothing was overwritten"
        )
    return None


def _atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        # SIGKILL cannot be caught, but then only the hidden .tmp file is left behind.
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError | RuntimeError):
            found = disk_error(path, error)
            if found is not None:
                raise found from None
        raise


def save_json(path: Path | str, data: Any, sort_keys: bool = True) -> None:
    """``sort_keys=False`` for configs: the order of a config's nodes can carry meaning (an
    evaluation's metrics run in the order they are listed)."""
    text = json.dumps(finite(data), indent=2, sort_keys=sort_keys, allow_nan=False)
    save_text(path, text + "\n")


def _torch_writer(data: Any) -> Callable[[IO[bytes]], None]:
    def write(handle: IO[bytes]) -> None:
        torch.save(data, handle)

    return write


def _text_writer(text: str) -> Callable[[IO[bytes]], None]:
    def write(handle: IO[bytes]) -> None:
        handle.write(text.encode())

    return write


def save_torch(path: Path | str, data: Any) -> None:
    _atomic(Path(path), _torch_writer(data))


def save_text(path: Path | str, text: str) -> None:
    _atomic(Path(path), _text_writer(text))
