"""In-memory image datasets: every dataset yields float tensors in [0, 1], NCHW.

Datasets that fit in memory live as tensors on the compute device and are batched by slicing
(no DataLoader, no worker processes). Every dataset option file builds an ``ImageData``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

# augmentation(x (B, C, H, W) in [0, 1], generator) -> augmented x of the same shape
Augmentation = Callable[[Tensor, torch.Generator], Tensor]


@dataclass(frozen=True)
class Split:
    """Images x (N, C, H, W) float32 in [0, 1] and labels y (N,) int64, on one device."""

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            n_x, n_y = self.x.shape[0], self.y.shape[0]
            raise ValueError(f"images and labels differ in count: {n_x} vs {n_y}")

    def __len__(self) -> int:
        return self.x.shape[0]

    def take(self, indices: Tensor | Sequence[int]) -> Split:
        index = torch.as_tensor(indices, dtype=torch.long, device=self.x.device)
        return Split(self.x[index], self.y[index])

    def first(self, n: int | None) -> Split:
        return self if n is None else Split(self.x[:n], self.y[:n])

    def last(self, n: int | None) -> Split:
        return self if n is None else Split(self.x[-n:], self.y[-n:])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (x, y) mini-batches by slicing (a random permutation when shuffling)."""
        n = len(self)
        order = torch.randperm(n, generator=generator).to(self.x.device) if shuffle else None
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            index = slice(start, min(start + batch_size, n))
            if order is None:
                yield self.x[index], self.y[index]
            else:
                yield self.x[order[index]], self.y[order[index]]

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)


def channel_stats(x: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std over (N, H, W), for the model's frozen input normalization."""
    dims = [0, 2, 3]
    return x.mean(dim=dims).tolist(), x.std(dim=dims).clamp_min(1e-6).tolist()


def select(data: ImageData, split: str, first: int | None = None, last: int | None = None) -> Split:
    """The examples a metric runs on, e.g. ``select(data, "test", first=1000)``."""
    chosen = data.split(split)
    if first is not None and last is not None:
        raise ValueError("give either first or last, not both")
    return chosen.first(first) if last is None else chosen.last(last)


class ImageData:
    """A labelled train/test pair plus what models need to know about it.

    Attributes: ``train``, ``test`` (Splits), ``num_classes``, ``input_shape`` (C, H, W),
    ``mean``/``std`` (per channel, from the training images), ``augmentation`` (or None).
    """

    def __init__(
        self,
        train: Split,
        test: Split,
        num_classes: int,
        augmentation: Augmentation | None = None,
    ) -> None:
        self.train, self.test = train, test
        self.num_classes = num_classes
        self.input_shape = tuple(train.x.shape[1:])
        self.mean, self.std = channel_stats(train.x)
        self.augmentation = augmentation

    def split(self, name: str) -> Split:
        splits = {"train": self.train, "test": self.test}
        if name not in splits:
            raise ValueError(f"split must be one of 'train', 'test', got {name!r}")
        return splits[name]

    def to(self, device: torch.device | str) -> ImageData:
        self.train, self.test = self.train.to(device), self.test.to(device)
        return self

    def augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return x if self.augmentation is None else self.augmentation(x, generator)
