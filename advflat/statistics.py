"""Running sums of per-batch statistics, kept on the device.

Reading a CUDA tensor with ``.item()`` synchronises the host with the GPU, so the loop adds
detached tensors here and reads them once per epoch (or log interval).
"""

from __future__ import annotations

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

    def means(self) -> dict[str, float]:
        return {key: float(total) / self._counts[key] for key, total in self._sums.items()}
