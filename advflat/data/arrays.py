"""Your own data as one NumPy ``.npz`` archive of arrays.

The archive holds either both splits::

    x_train  (N, H, W, C) uint8 0..255, or float in [0, 1]; (N, H, W) means C = 1
    y_train  (N,) or (N, 1) integers 0..K-1
    x_test   like x_train (same H, W, C)
    y_test

or one pair ``x``, ``y`` (same shapes) of which the last ``test_count`` examples are the test
split and the rest the training split, in the archive's order (shuffle before saving when the
file is sorted by class). Images are channels-last, as NumPy, Pillow and ``advflat-convert``
write them; an array shaped like N×C×H×W is refused, not transposed.

No code runs from the archive: it is read with ``allow_pickle=False``, so an array of Python
objects (which only a pickle can hold) is refused unread.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from advflat.core.checks import at_least
from advflat.core.errors import ConfigError
from advflat.data.base import Split
from advflat.data.dataset import Dataset, split_from_images
from advflat.data.hdf5 import RawSplit, check_images, check_labels, checked_classes

BOTH_SPLITS = ("x_train", "y_train", "x_test", "y_test")
ONE_PAIR = ("x", "y")
LAYOUT = f"an .npz archive holding {', '.join(BOTH_SPLITS)} (or x, y and test_count)"


class Arrays(Dataset):
    """Images and labels from one ``.npz`` archive (see the module docstring).

    Args:
        path: the ``.npz`` file.
        num_classes: the number of classes; null infers it as the largest label + 1.
        test_count: with a single ``x``, ``y`` pair, its last test_count examples are the test
            split; null with ``x_train``, ... ``y_test``.
        **options: the common subset/augmentation options of ``Dataset``.
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike,
        num_classes: int | None = None,
        test_count: int | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(path, str | os.PathLike) or not str(path).strip():
            raise ValueError(f"path must be {LAYOUT}, got {path!r}")
        self.path = Path(path).expanduser().absolute()  # absolute, not resolved: the user's path
        self.num_classes_option = (
            None if num_classes is None else at_least("num_classes", num_classes, 1)
        )
        self.test_count = None if test_count is None else at_least("test_count", test_count, 1)
        super().__init__(**options)

    def load(self) -> tuple[Split, Split, int]:
        with open_archive(self.path) as archive:
            names = set(archive.files)
            both, one = set(BOTH_SPLITS) <= names, set(ONE_PAIR) <= names
            if both == one:  # neither layout, or both at once
                found = sorted(names) or "no arrays"
                raise ConfigError(f"{self.path} holds {found}; expected {LAYOUT}")
            if both and self.test_count is not None:
                raise ConfigError(
                    f"{self.path} holds both splits ({', '.join(BOTH_SPLITS)}); test_count "
                    "splits a single x, y pair only (set it to null)"
                )
            keys = BOTH_SPLITS if both else ONE_PAIR
            arrays = {name: read_member(self.path, archive, name) for name in keys}
        if both:
            train = self.pair(arrays, "x_train", "y_train")
            test = self.pair(arrays, "x_test", "y_test")
        else:
            train, test = self.split_pair(self.pair(arrays, "x", "y"))
        num_classes = checked_classes(self.path, train, test, self.num_classes_option)
        return split_from_images(*train), split_from_images(*test), num_classes

    def pair(self, arrays: dict[str, np.ndarray], x: str, y: str) -> RawSplit:
        """The checked images ``x`` and labels ``y`` of the archive, of the same length."""
        images = check_images(self.path / x, arrays[x])
        labels = check_labels(self.path / y, arrays[y])
        if len(images) != len(labels):
            raise ConfigError(
                f"{self.path}: {x} has {len(images)} images but {y} has {len(labels)} labels"
            )
        return images, labels

    def split_pair(self, pair: RawSplit) -> tuple[RawSplit, RawSplit]:
        """(the first N - test_count examples, the last test_count) of a single x, y pair."""
        images, labels = pair
        if self.test_count is None:
            raise ConfigError(
                f"{self.path} holds a single x, y pair: set test_count (how many of its last "
                "examples are the test split)"
            )
        if self.test_count >= len(images):
            raise ConfigError(
                f"{self.path}: test_count must be < {len(images)} (the number of examples in x), "
                f"got {self.test_count}"
            )
        cut = len(images) - self.test_count
        return (images[:cut], labels[:cut]), (images[cut:], labels[cut:])


@contextmanager
def open_archive(path: Path) -> Iterator[np.lib.npyio.NpzFile]:
    """The .npz at ``path``, opened so that reading a member never unpickles anything."""
    if not path.is_file():
        raise ConfigError(f"{path} not found: dataset=arrays reads {LAYOUT}")
    # Our own handle: np.load leaves its handle open when the zip directory is damaged.
    with path.open("rb") as handle:
        try:
            loaded = np.load(handle, allow_pickle=False)
        # A file that is neither .npy nor .npz is taken for a pickle and refused (ValueError);
        # a damaged archive raises BadZipFile or EOFError.
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise ConfigError(f"{path} is not a readable .npz archive ({error})") from None
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ConfigError(f"{path} is a single .npy array; expected {LAYOUT}")
        with loaded:
            yield loaded


def read_member(path: Path, archive: np.lib.npyio.NpzFile, name: str) -> np.ndarray:
    try:
        return archive[name]
    except ValueError:  # numpy's refusal of an object array under allow_pickle=False
        raise ConfigError(
            f"{path}: {name} holds Python objects, which only a pickle can store; "
            "save numbers (uint8 or float images, integer labels)"
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise ConfigError(f"{path}: {name} cannot be read ({error})") from None
