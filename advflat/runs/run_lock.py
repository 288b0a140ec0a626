"""One process per run folder: an exclusive lock held while a run trains or is evaluated.

The lock is ``fcntl.flock`` on ``.advflat.lock`` in the folder. The operating system releases it
when the holder ends, however it ends (Ctrl-C, SIGKILL, a node that dies), so there is no stale
lock to clean up. The file itself stays: removing it would let a late-comer lock a fresh inode
while a waiter still holds the old one. Its content is the holder's PID, for the refusal message.

``flock`` locks belong to an open file, not to a process, so a second ``open`` + ``flock`` from
the same process would refuse itself: the locks this process holds are kept here and taking one
again is a no-op (``advflat`` takes it before Hydra writes into the folder and again in the run).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from advflat.core.errors import ConfigError

LOCK_FILE = ".advflat.lock"
_held: dict[Path, IO[str]] = {}


def lock_file(folder: Path | str) -> Path:
    return Path(folder) / LOCK_FILE


def hold(folder: Path | str, task: str) -> None:
    """Lock ``folder`` for this process (``task``, e.g. "training", names it in messages).

    Another live holder: a one-line ConfigError naming its PID. The folder must exist.
    """
    key = Path(folder).absolute()
    if key in _held:
        return
    handle = open(lock_file(key), "a+")  # noqa: SIM115 — stays open while the lock is held
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise ConfigError(
            f"{key} is in use by process {holder}; {task} refused (wait for it to end, "
            "or choose another folder)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _held[key] = handle


def release(folder: Path | str) -> None:
    """Unlock ``folder`` if this process holds it (closing the file releases the lock)."""
    handle = _held.pop(Path(folder).absolute(), None)
    if handle is not None:
        handle.close()


def holds(folder: Path | str) -> bool:
    """Whether this process holds the lock of ``folder``."""
    return Path(folder).absolute() in _held
