"""The options every dataset shares: training/test subsets and the training augmentation.

Each dataset option file builds a subclass of ``Dataset``. A subclass stores its own options and
implements ``load()`` (the full train and test splits); ``Dataset.__init__`` then applies the
subsets, so subset semantics live here and nowhere else:

- ``train_first: N`` keeps the first N training images, ``train_indices: [i, ...]`` exactly those
  (in that order); one or the other, not both. The same for ``test_first`` / ``test_indices``.
- ``mean``/``std`` (the model's input normalization) come from the training images AFTER the
  subset, i.e. from what the model is trained on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch

from advflat.core.checks import at_least
from advflat.data.base import Augmentation, ImageData, Split


class Dataset(ImageData, ABC):
    """A labelled train/test pair read by ``load()`` and restricted to the configured subsets."""

    def __init__(
        self,
        *,
        train_first: int | None = None,
        test_first: int | None = None,
        train_indices: Sequence[int] | None = None,
        test_indices: Sequence[int] | None = None,
        augmentation: Augmentation | None = None,
    ) -> None:
        # Cheap checks first: a bad option should not wait for a 50k-image load.
        _check_subset("train", train_first, train_indices)
        _check_subset("test", test_first, test_indices)
        if augmentation is not None and not callable(augmentation):
            raise ValueError(f"augmentation must be callable or null, got {augmentation!r}")
        train, test, num_classes = self.load()
        train = subset(train, "train", train_first, train_indices)
        test = subset(test, "test", test_first, test_indices)
        super().__init__(train, test, num_classes, augmentation)

    @abstractmethod
    def load(self) -> tuple[Split, Split, int]:
        """The full (train, test, num_classes); subclasses read their source here."""


def _check_subset(split: str, first: int | None, indices: Sequence[int] | None) -> None:
    if first is not None and indices is not None:
        raise ValueError(f"give {split}_first or {split}_indices, not both")
    if first is not None:
        at_least(f"{split}_first", first, 1)
    if indices is not None and len(indices) == 0:
        raise ValueError(f"{split}_indices must not be empty (use null for the whole set)")


def subset(split: Split, name: str, first: int | None, indices: Sequence[int] | None) -> Split:
    """The chosen examples of ``split`` as a copy (a view would keep the full set in memory)."""
    n = len(split)
    if first is not None:
        if first > n:
            raise ValueError(f"{name}_first must be <= {n} (the {name} set's size), got {first}")
        return Split(split.x[:first].clone(), split.y[:first].clone())
    if indices is not None:
        outside = [i for i in indices if not 0 <= i < n]
        if outside:
            raise ValueError(
                f"{name}_indices must lie in [0, {n - 1}] (the {name} set's size is {n}), "
                f"got {outside[:5]}"
            )
        return split.take(list(indices))
    return split


def split_from_images(images: np.ndarray, labels: np.ndarray) -> Split:
    """Images (N, H, W, C) uint8 (0..255) or float in [0, 1] and labels (N,) as a float32 Split."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)  # (N, C, H, W)
    # contiguous() on the small dtype first: one uint8 copy instead of a float32 one.
    x = x.contiguous()
    x = x.to(torch.float32).div_(255) if x.dtype == torch.uint8 else x.to(torch.float32)
    y = torch.from_numpy(np.asarray(labels).reshape(-1).astype(np.int64))  # (N,)
    return Split(x, y)
