"""Your own data as HDF5 files: a directory with one array per file.

Layout of ``root``::

    train_images.h5   (N, H, W, C) uint8 0..255, or float in [0, 1]; (N, H, W) means C = 1
    train_labels.h5   (N,) or (N, 1) integers 0..K-1
    test_images.h5    like train_images.h5 (same H, W, C)
    test_labels.h5

Each file holds one array: the dataset named ``tensor`` (what ``advflat-convert``
writes), or else the file's only dataset. No code runs from these files: h5py returns
numbers, strings and references, and never unpickles (HDF5 holds no Python objects). A
dataset whose bytes live outside its file (external storage, or a virtual dataset mapping other
files) is refused: reading it would read whatever file it names, e.g. /etc/passwd.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from advflat.core.checks import at_least
from advflat.core.errors import ConfigError
from advflat.data.base import Split
from advflat.data.dataset import Dataset, split_from_images

KEY = "tensor"
FILES = ("train_images.h5", "train_labels.h5", "test_images.h5", "test_labels.h5")


# (images (N, H, W, C), labels (N,)) as read from a file, before the conversion to tensors.
RawSplit = tuple[np.ndarray, np.ndarray]


class HDF5(Dataset):
    """Images and labels from ``root/{train,test}_{images,labels}.h5`` (see the module docstring).

    Args:
        root: the directory with the four files.
        num_classes: the number of classes; null infers it as the largest label + 1.
        **options: the common subset/augmentation options of ``Dataset``.
    """

    def __init__(
        self, *, root: str | os.PathLike, num_classes: int | None = None, **options: Any
    ) -> None:
        if not isinstance(root, str | os.PathLike) or not str(root).strip():
            raise ValueError(f"root must be the directory holding {', '.join(FILES)}, got {root!r}")
        self.root = Path(root).expanduser().absolute()
        self.num_classes_option = (
            None if num_classes is None else at_least("num_classes", num_classes, 1)
        )
        super().__init__(**options)

    def load(self) -> tuple[Split, Split, int]:
        train = read_split(self.root, "train")
        test = read_split(self.root, "test")
        num_classes = checked_classes(self.root, train, test, self.num_classes_option)
        return split_from_images(*train), split_from_images(*test), num_classes


def checked_classes(path: Path, train: RawSplit, test: RawSplit, num_classes: int | None) -> int:
    """The number of classes (given, or the largest label + 1), once the two splits agree on
    the image shape and every label is below it."""
    if train[0].shape[1:] != test[0].shape[1:]:
        raise ConfigError(
            f"{path}: test images are {shape(test[0])} but train images are {shape(train[0])}; "
            "both must be N×H×W×C with the same H, W, C"
        )
    largest = int(max(train[1].max(initial=0), test[1].max(initial=0)))
    classes = num_classes or largest + 1
    if largest >= classes:
        raise ConfigError(f"{path}: labels go up to {largest}, but num_classes is {classes}")
    return classes


def shape(images: np.ndarray) -> str:
    return "×".join(str(s) for s in images.shape[1:])


def read_array(path: Path) -> np.ndarray:
    """The one array in ``path``: its dataset ``tensor``, or else its only dataset."""
    if not path.is_file():
        raise ConfigError(
            f"{path} not found: an HDF5 dataset directory needs {', '.join(FILES)} "
            "(advflat-convert writes them)"
        )
    try:
        with h5py.File(path, "r") as handle:
            names: list[str] = []
            handle.visititems(
                lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None
            )
            if KEY not in names and len(names) != 1:
                raise ConfigError(
                    f"{path} must hold one dataset (or one named {KEY!r}), found {names or 'none'}"
                )
            dataset = handle[KEY if KEY in names else names[0]]
            check_stored_inside(path, dataset)
            return dataset[()]
    except OSError as error:
        raise ConfigError(f"{path} is not a readable HDF5 file ({error})") from None


def check_stored_inside(path: Path, dataset: h5py.Dataset) -> None:
    """Refuse a dataset whose bytes are stored in other files (external or virtual storage)."""
    if dataset.external:
        files = sorted({str(entry[0]) for entry in dataset.external})
        raise ConfigError(
            f"{path}: dataset {dataset.name!r} keeps its data in other files ({', '.join(files)}); "
            "advflat reads only data stored inside the .h5 file"
        )
    if dataset.is_virtual:
        files = sorted({source.file_name for source in dataset.virtual_sources()})
        raise ConfigError(
            f"{path}: dataset {dataset.name!r} is a virtual dataset mapping {', '.join(files)}; "
            "advflat reads only data stored inside the .h5 file"
        )


def read_split(root: Path, split: str) -> RawSplit:
    """Checked (images (N, H, W, C), labels (N,) int64) of the ``train`` or ``test`` split."""
    images_path, labels_path = root / f"{split}_images.h5", root / f"{split}_labels.h5"
    images = check_images(images_path, read_array(images_path))
    labels = check_labels(labels_path, read_array(labels_path))
    if len(images) != len(labels):
        raise ConfigError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    return images, labels


def check_images(path: Path, images: np.ndarray) -> np.ndarray:
    """Images as (N, H, W, C) uint8 or float32 in [0, 1], or a ConfigError saying what is wrong."""
    if images.ndim == 3:
        images = images[..., None]  # grey (N, H, W) -> (N, H, W, 1)
    if images.ndim != 4 or len(images) == 0:
        raise ConfigError(f"{path} must hold images N×H×W×C (N >= 1), got shape {images.shape}")
    if images.shape[3] > 4 and images.shape[1] <= 4:
        raise ConfigError(
            f"{path} has shape {images.shape}, which looks like N×C×H×W; expected N×H×W×C"
        )
    if images.dtype == np.uint8:
        return images
    if not np.issubdtype(images.dtype, np.floating):
        raise ConfigError(f"{path} must hold uint8 (0..255) or float images, got {images.dtype}")
    low, high = float(images.min()), float(images.max())
    if not (low >= 0.0 and high <= 1.0):  # also false for NaN
        raise ConfigError(
            f"{path} must hold float images in [0, 1] (or uint8 0..255), "
            f"got values in [{low:g}, {high:g}]"
        )
    return images.astype(np.float32, copy=False)


def check_labels(path: Path, labels: np.ndarray) -> np.ndarray:
    """Labels as (N,) int64 >= 0, from (N,) or (N, 1) integers (or integral floats)."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ConfigError(f"{path} must hold labels N or N×1, got shape {labels.shape}")
    numeric = np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)
    if not numeric or not np.all(np.equal(np.mod(labels, 1), 0)):
        raise ConfigError(f"{path} must hold integer labels, got {labels.dtype} values")
    if labels.size and labels.min() < 0:
        raise ConfigError(f"{path} must hold labels >= 0, got {labels.min()}")
    return labels.astype(np.int64)


def write_split(root: Path | str, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write ``{split}_images.h5`` and ``{split}_labels.h5`` under ``root`` in the layout above."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name, array in ((f"{split}_images.h5", images), (f"{split}_labels.h5", labels)):
        with h5py.File(root / name, "w") as handle:
            handle.create_dataset(KEY, data=array)
