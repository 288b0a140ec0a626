"""Running sums of per-batch statistics, kept on the device.

Reading a CUDA tensor (``.item()``, ``float()``, ``.tolist()``) synchronises the host with the
GPU, so the loop adds detached tensors here and ``means`` reads them all at once, once per epoch
(or log interval).
"""

from __future__ import annotations

import torch
from torch import Tensor


class RunningMeans:
    def __init__(self) -> None:
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}

    def add(self, values: dict[str, Tensor], count: int) -> None:
        """Add per-batch means ``values`` that were computed over ``count`` examples."""
        for key, value in values.items():
            weighted = value.detach().float() * count
            self._sums[key] = self._sums[key] + weighted if key in self._sums else weighted
            self._counts[key] = self._counts.get(key, 0) + count

    def keys(self) -> list[str]:
        return list(self._sums)

    def __contains__(self, key: str) -> bool:
        return key in self._sums

    def total(self, key: str) -> Tensor:
        """The weighted sum of ``key`` (a device tensor: reading it syncs)."""
        return self._sums[key]

    def count(self, key: str) -> int:
        return self._counts[key]

    def means(self) -> dict[str, float]:
        if not self._sums:
            return {}
        totals = torch.stack([total.reshape(()) for total in self._sums.values()]).tolist()
        return {
            key: total / self._counts[key] for key, total in zip(self._sums, totals, strict=True)
        }
