"""The test (and train) examples ``advflat.evaluate`` is given, as (images, labels) pairs.

Accepted: a pair of tensors ``(x, y)``, a ``Split``, or a torchvision-style dataset (indexable,
item ``i`` an ``(image tensor, label)`` pair: images read with ``transforms.ToTensor()``) for
the test split alone; a mapping ``{"test": ..., "train": ...}`` of those (train optional); or an
advflat ``ImageData`` (both splits). Only the containers are read here; the values are checked
against the model once they are on its device (``advflat.evaluation.external``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from advflat.data.base import ImageData, Split

WHO = "advflat.evaluate"  # what every message starts with
Pair = tuple[Tensor, Tensor]  # images (N, C, H, W), labels (N,)
SPLITS = ("test", "train")
EXPECTED = (
    "(x_test, y_test), {'test': (x, y), 'train': (x, y)}, a dataset of (image tensor, label) "
    "items, an advflat ImageData or a dataset option name"
)


def given_splits(data: Any) -> tuple[Pair, Pair | None]:
    """(test, train or None) from any accepted form of ``data``."""
    if isinstance(data, ImageData):
        return one_split(data.test, "test"), one_split(data.train, "train")
    if isinstance(data, Mapping):
        if "test" not in data or set(data) - set(SPLITS):
            raise ValueError(
                f"{WHO}: data as a mapping needs the key 'test' and may have 'train', got "
                f"{sorted(map(str, data))}"
            )
        train = data.get("train")
        return one_split(data["test"], "test"), None if train is None else one_split(train, "train")
    return one_split(data, "test"), None


def one_split(value: Any, name: str) -> Pair:
    """One split from a Split, an (x, y) pair of tensors or a dataset of (image, label)."""
    if isinstance(value, Split):
        return value.x, value.y
    if isinstance(value, tuple | list) and len(value) == 2 and all(map(torch.is_tensor, value)):
        return value[0], value[1]
    if torch.is_tensor(value) or isinstance(value, str | bytes | Mapping):
        raise ValueError(f"{WHO}: data ({name}): expected {EXPECTED}, got {_kind(value)}")
    if hasattr(value, "__getitem__") and hasattr(value, "__len__"):
        return _from_items(value, name)
    raise ValueError(f"{WHO}: data ({name}): expected {EXPECTED}, got {_kind(value)}")


def _from_items(dataset: Any, name: str) -> Pair:
    """Every item of an indexable dataset, stacked: images (N, C, H, W) and labels (N,)."""
    if len(dataset) == 0:
        raise ValueError(f"{WHO}: data ({name}): the dataset is empty")
    images, labels = [], []
    for index in range(len(dataset)):
        item = dataset[index]
        if not (isinstance(item, tuple | list) and len(item) == 2 and torch.is_tensor(item[0])):
            raise ValueError(
                f"{WHO}: data ({name}): item {index} must be (image tensor (C, H, W), label), got "
                f"{_kind(item)}; read images with transforms.ToTensor() (no Normalize: wrap the "
                "model in advflat.models.Normalized instead)"
            )
        images.append(item[0])
        labels.append(int(item[1]))
    if len({image.shape for image in images}) > 1:
        raise ValueError(f"{WHO}: data ({name}): the dataset's images differ in shape")
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


def _kind(value: Any) -> str:
    """A short description for messages: a tensor's shape and dtype, else the type's name."""
    if torch.is_tensor(value):
        return f"a tensor of shape {tuple(value.shape)} ({value.dtype})"
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {', '.join(_kind(v) for v in value[:3])}"
    return type(value).__name__
