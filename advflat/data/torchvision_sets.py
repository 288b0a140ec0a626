"""MNIST, CIFAR-10, CIFAR-100 and SVHN through torchvision, loaded whole into tensors once.

torchvision only reads (and, with ``download=True``, fetches) the files; the images then live as
one float tensor per split and are batched by slicing. Missing files become a one-line
``ConfigError`` naming the directory, never a torchvision traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from advflat.data.base import Split
from advflat.data.dataset import Dataset, split_from_images
from advflat.errors import ConfigError

# (images (N, H, W, C) uint8, labels (N,) int64): the raw form, shared with the HDF5 converter.
RawSplit = tuple[np.ndarray, np.ndarray]


def datasets():
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
    def _read(root: str, train: bool, download: bool) -> RawSplit:
        raise NotImplementedError


class MNIST(TorchvisionData):
    """60k/10k grey 28×28 handwritten digits, x (N, 1, 28, 28), 10 classes."""

    title = "MNIST"
    files = "the uncompressed IDX files (train-images-idx3-ubyte, ...) into MNIST/raw/"
    classes = 10

    @staticmethod
    def _read(root: str, train: bool, download: bool) -> RawSplit:
        mnist = datasets().MNIST(root, train=train, download=download)
        return mnist.data.numpy()[..., None], mnist.targets.numpy()  # (N, 28, 28, 1)


class CIFAR10(TorchvisionData):
    """50k/10k colour 32×32 images, x (N, 3, 32, 32), 10 classes."""

    title = "CIFAR-10"
    files = "cifar-10-batches-py"
    classes = 10

    @staticmethod
    def _read(root: str, train: bool, download: bool) -> RawSplit:
        cifar = datasets().CIFAR10(root, train=train, download=download)
        return cifar.data, np.asarray(cifar.targets)  # (N, 32, 32, 3)


class CIFAR100(TorchvisionData):
    """50k/10k colour 32×32 images, x (N, 3, 32, 32), 100 fine classes."""

    title = "CIFAR-100"
    files = "cifar-100-python"
    classes = 100

    @staticmethod
    def _read(root: str, train: bool, download: bool) -> RawSplit:
        cifar = datasets().CIFAR100(root, train=train, download=download)
        return cifar.data, np.asarray(cifar.targets)  # (N, 32, 32, 3)


class SVHN(TorchvisionData):
    """73k/26k colour 32×32 house numbers (no 'extra' split), x (N, 3, 32, 32), 10 classes."""

    title = "SVHN"
    files = "train_32x32.mat and test_32x32.mat"
    classes = 10

    @staticmethod
    def _read(root: str, train: bool, download: bool) -> RawSplit:
        svhn = datasets().SVHN(root, split="train" if train else "test", download=download)
        # torchvision already maps the .mat label 10 to digit 0.
        return svhn.data.transpose(0, 2, 3, 1), svhn.labels  # (N, 3, 32, 32) -> (N, 32, 32, 3)
