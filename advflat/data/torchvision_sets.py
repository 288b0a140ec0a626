"""MNIST, CIFAR-10, CIFAR-100 and SVHN in torchvision's file layout, loaded whole into tensors.

torchvision fetches the files (``download=True``) and reads MNIST and SVHN; CIFAR's pickled
batches are read here, by an unpickler that cannot run code. The images then live as one float
tensor per split and are batched by slicing. Missing files become a one-line ``ConfigError``
naming the directory, never a torchvision traceback.
"""

from __future__ import annotations

import pickle
from abc import abstractmethod
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from advflat.core.errors import ConfigError
from advflat.data.base import Split
from advflat.data.dataset import Dataset, split_from_images
from advflat.data.safe_pickle import load_arrays

# (images (N, H, W, C) uint8, labels (N,) int64): the raw form, shared with the HDF5 converter.
RawSplit = tuple[np.ndarray, np.ndarray]


def datasets() -> ModuleType:
    """``torchvision.datasets``, imported on first use: it takes seconds, and most runs (digits,
    HDF5) never need it."""
    import torchvision.datasets

    return torchvision.datasets


class TorchvisionData(Dataset):
    """A torchvision dataset under ``root``; subclasses say what it is called and how to read it.

    Args:
        root: the directory torchvision looks in (and downloads to).
        download: fetch the files when missing (needs internet).
        **options: the common subset/augmentation options of ``Dataset``.
    """

    title: ClassVar[str]  # the name users know, for messages
    files: ClassVar[str]  # what has to be in root, for messages
    classes: ClassVar[int]

    def __init__(self, *, root: str, download: bool = False, **options: Any) -> None:
        self.root = Path(root).expanduser().absolute()  # absolute, not resolved: the user's path
        self.download = download
        super().__init__(**options)

    def load(self) -> tuple[Split, Split, int]:
        train = self.read(self.root, train=True, download=self.download)
        test = self.read(self.root, train=False, download=self.download)
        return split_from_images(*train), split_from_images(*test), self.classes

    @classmethod
    def read(
        cls, root: Path, *, train: bool, download: bool, how: str = "dataset.download=true"
    ) -> RawSplit:
        """The raw training or test split, or a ConfigError saying where the files should be.

        ``how`` is the option that turns downloading on, for the message.
        """
        try:
            images, labels = cls._read(str(root), train, download)
        # torchvision raises RuntimeError for missing/corrupt files and failed downloads;
        # URLError (an OSError) escapes from some download paths.
        except (RuntimeError, OSError) as error:
            if download:
                reason = str(error).strip().splitlines()[0] if str(error).strip() else "no reason"
                message = (
                    f"{cls.title} could not be downloaded to {root} ({reason}): "
                    f"copy {cls.files} there from a machine with internet"
                )
            else:
                message = (
                    f"{cls.title} not found in {root}: run with {how} on a "
                    f"machine with internet, or copy {cls.files} there"
                )
            raise ConfigError(message) from None
        return images, np.asarray(labels, dtype=np.int64)

    @staticmethod
    @abstractmethod
    def _read(root: str, train: bool, download: bool) -> RawSplit:
        """The raw split (fetched first when ``download``); missing files raise OSError."""


class MNIST(TorchvisionData):
    """60k/10k grey 28×28 handwritten digits, x (N, 1, 28, 28), 10 classes."""

    title = "MNIST"
    files = "the uncompressed IDX files (train-images-idx3-ubyte, ...) into MNIST/raw/"
    classes = 10

    @staticmethod
    def _read(root: str, train: bool, download: bool) -> RawSplit:
        # No code runs from these files: torchvision parses the raw IDX files with frombuffer, and
        # reads a legacy MNIST/processed/*.pt only through torch.load(weights_only=True), an
        # unpickler limited to tensors and plain containers.
        mnist = datasets().MNIST(root, train=train, download=download)
        return mnist.data.numpy()[..., None], mnist.targets.numpy()  # (N, 28, 28, 1)


class CIFARData(TorchvisionData):
    """CIFAR's "python version": pickled dicts of uint8 rows (N, 3072) and a list of labels.

    Read with ``load_arrays``, not torchvision: torchvision unpickles the batch files with plain
    ``pickle.load`` (after an MD5 check), and a planted file must fail to load, not run.
    torchvision only downloads and verifies the archive.
    """

    archive: ClassVar[str]  # the torchvision class whose url, filename and tgz_md5 are fetched
    train_files: ClassVar[tuple[str, ...]]
    test_files: ClassVar[tuple[str, ...]]
    label_key: ClassVar[str]

    @classmethod
    def _read(cls, root: str, train: bool, download: bool) -> RawSplit:
        folder = Path(root) / cls.files
        names = cls.train_files if train else cls.test_files
        if download and not all((folder / name).is_file() for name in names):
            cls._fetch(root)
        batches = [cls._batch(folder / name) for name in names]
        images = np.concatenate([batch[0] for batch in batches])
        labels = np.concatenate([batch[1] for batch in batches])
        return images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels  # (N, 32, 32, 3)

    @classmethod
    def _fetch(cls, root: str) -> None:
        """Download and extract the archive, checked against torchvision's MD5."""
        from torchvision.datasets import cifar

        source = getattr(cifar, cls.archive)
        cifar.download_and_extract_archive(
            source.url, root, filename=source.filename, md5=source.tgz_md5
        )

    @classmethod
    def _batch(cls, path: Path) -> RawSplit:
        """(rows (N, 3072) uint8, labels (N,)) of one batch file, or a ConfigError."""
        try:
            content = load_arrays(path)
        except pickle.UnpicklingError as error:
            raise ConfigError(
                f"{path} cannot be read as a {cls.title} batch file: {error}."
            ) from None
        # Keys are str in the original (Python 2) files, bytes in some re-pickled copies.
        entries = {
            (key.decode("latin1") if isinstance(key, bytes) else key): value
            for key, value in (content.items() if isinstance(content, dict) else ())
        }
        rows = np.asarray(entries.get("data"))
        labels = np.asarray(entries.get(cls.label_key, ()))
        if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != 3 * 32 * 32:
            raise ConfigError(
                f"{path}: 'data' must be uint8 rows of 3072 pixels (N×3072), "
                f"got {rows.dtype} of shape {rows.shape}"
            )
        if labels.shape != (len(rows),) or not np.issubdtype(labels.dtype, np.integer):
            raise ConfigError(
                f"{path}: {cls.label_key!r} must be {len(rows)} integers, "
                f"got {labels.dtype} of shape {labels.shape}"
            )
        return rows, labels


class CIFAR10(CIFARData):
    """50k/10k colour 32×32 images, x (N, 3, 32, 32), 10 classes."""

    title = "CIFAR-10"
    files = "cifar-10-batches-py"
    classes = 10
    archive = "CIFAR10"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    label_key = "labels"


class CIFAR100(CIFARData):
    """50k/10k colour 32×32 images, x (N, 3, 32, 32), 100 fine classes."""

    title = "CIFAR-100"
    files = "cifar-100-python"
    classes = 100
    archive = "CIFAR100"
    train_files = ("train",)
    test_files = ("test",)
    label_key = "fine_labels"


class SVHN(TorchvisionData):
    """73k/26k colour 32×32 house numbers (no 'extra' split), x (N, 3, 32, 32), 10 classes."""

    title = "SVHN"
    files = "train_32x32.mat and test_32x32.mat"
    classes = 10

    @staticmethod
    def _read(root: str, train: bool, download: bool) -> RawSplit:
        # No code runs from these files: torchvision checks the .mat file's MD5, then
        # scipy.io.loadmat parses it without pickle or eval; MATLAB function handles and objects
        # come back as inert arrays (MatlabFunction, MatlabObject), never called.
        svhn = datasets().SVHN(root, split="train" if train else "test", download=download)
        # torchvision already maps the .mat label 10 to digit 0.
        return svhn.data.transpose(0, 2, 3, 1), svhn.labels  # (N, 3, 32, 32) -> (N, 32, 32, 3)
