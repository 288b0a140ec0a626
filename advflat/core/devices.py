"""Moving tensors between devices without stalling the host (used by data and training)."""

from __future__ import annotations

import torch
from torch import Tensor


def to_device(tensor: Tensor, device: torch.device | str) -> Tensor:
    """Copy a (small) CPU tensor to ``device`` without a host synchronisation.

    A plain ``.to("cuda")`` from pageable memory waits for the GPU's queue to drain; from
    pinned memory with ``non_blocking`` the copy is queued like a kernel, and torch's pinned
    allocator keeps the buffer alive until the copy has run.
    """
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
