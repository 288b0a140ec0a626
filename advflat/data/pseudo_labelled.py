"""The 500k pseudo-labelled TinyImages of Carmon et al. (2019), "Unlabeled Data Improves
Adversarial Robustness": extra training images for semi-supervised adversarial training.

The file (HDF5 or pickle) holds ``data``: uint8 (N, 32, 32, 3) and ``extrapolated_targets``:
(N,) integer pseudo-labels (other entries are ignored). No file can run code: pickles are read
by ``safe_pickle.load_arrays`` (numpy arrays and plain containers only), and h5py only reads
arrays (HDF5 holds no code).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np

from advflat.core.checks import at_least
from advflat.core.errors import ConfigError
from advflat.data.base import Split
from advflat.data.dataset import split_from_images
from advflat.data.safe_pickle import load_arrays

IMAGES, LABELS = "data", "extrapolated_targets"


class PseudoLabelled:
    """Reader of a pseudo-labelled image file; ``load()`` returns its images as a ``Split``.

    Args:
        path: the ``.h5``/``.hdf5`` or pickle file (format recognised by content, not name).
        first: read only the first N images (null: all; 500k images are 6 GB as float32).
    """

    def __init__(self, *, path: str, first: int | None = None) -> None:
        self.path = Path(path).expanduser().absolute()
        self.first = None if first is None else at_least("first", first, 1)
        if not self.path.is_file():
            raise ConfigError(
                f"{self.path} not found: the pseudo-labelled data of Carmon et al. "
                f"(HDF5 or pickle with {IMAGES!r} and {LABELS!r})"
            )

    def load(self) -> Split:
        """Images x (N, 3, 32, 32) float32 in [0, 1] and pseudo-labels y (N,) int64."""
        reader = _read_hdf5 if h5py.is_hdf5(self.path) else _read_pickle
        images, labels = reader(self.path, self.first)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ConfigError(
                f"{self.path}: {IMAGES!r} must be uint8 N×H×W×C, "
                f"got {images.dtype} of shape {images.shape}"
            )
        labels = np.asarray(labels).reshape(-1)
        if len(images) != len(labels) or not np.issubdtype(labels.dtype, np.integer):
            raise ConfigError(
                f"{self.path}: {LABELS!r} must be {len(images)} integers, "
                f"got {labels.dtype} of shape {labels.shape}"
            )
        return split_from_images(images, labels)


def _read_hdf5(path: Path, first: int | None) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as handle:
        missing = [key for key in (IMAGES, LABELS) if key not in handle]
        if missing:
            raise ConfigError(f"{path} has no dataset(s) {missing} (found {list(handle)})")
        # Slicing the h5py dataset reads only the first rows from disk.
        return handle[IMAGES][:first], handle[LABELS][:first]


def _read_pickle(path: Path, first: int | None) -> tuple[np.ndarray, np.ndarray]:
    try:
        content = load_arrays(path)
    except pickle.UnpicklingError as error:
        raise ConfigError(f"{path} is neither HDF5 nor a readable pickle ({error})") from None
    if not isinstance(content, dict) or not {IMAGES, LABELS} <= set(content):
        found = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise ConfigError(f"{path} must be a dict with {IMAGES!r} and {LABELS!r}, got {found}")
    return np.asarray(content[IMAGES])[:first], np.asarray(content[LABELS])[:first]
