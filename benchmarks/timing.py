"""Wall-clock timing and peak memory that are honest on asynchronous CUDA devices."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    # CUDA kernels run asynchronously: the clock may only be read once the queue is empty.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds that ``fn()`` takes on ``device``, synchronised on both sides."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated device memory since the last reset (CUDA), else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
