"""Your own images as a folder per class, decoded by Pillow and resized to one stated size.

Layout of ``root``::

    train/<class>/*.png|*.jpg|*.jpeg
    test/<class>/*.png|*.jpg|*.jpeg

The labels are the positions of the class folder names of ``train/`` in sorted order (``bird``
0, ``cat`` 1, ``dog`` 2); ``test/`` may lack a class but not add one. After loading, the
dataset's ``class_names`` lists them in label order (the rule is the mapping: the same folders
always give the same labels). Files are read in sorted order; other
files and hidden ones (``.DS_Store``, ``._x.png``) are skipped. Every image is converted to grey
(``channels: 1``) or RGB (``channels: 3``; an alpha channel is dropped) and resized to
``size``×``size`` (bilinear, stretched, not cropped), then held as uint8 0..255 like every other
dataset's raw images.

No code runs from these files: Pillow is allowed to decode PNG and JPEG only, so a file that is
really an EPS (which Pillow hands to Ghostscript) or any other format is refused, whatever its
name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from advflat.core.checks import at_least, one_of
from advflat.core.errors import ConfigError
from advflat.data.base import Split
from advflat.data.dataset import Dataset, split_from_images

SPLITS = ("train", "test")
SUFFIXES = (".png", ".jpg", ".jpeg")
FORMATS = ("PNG", "JPEG")  # the only decoders Pillow may use
MODES = {1: "L", 3: "RGB"}  # channels -> Pillow mode
LAYOUT = "root/train/<class>/*.png|jpg and root/test/<class>/*.png|jpg"


class Folder(Dataset):
    """Images from ``root/{train,test}/<class>/`` (see the module docstring).

    Args:
        root: the directory holding ``train/`` and ``test/``.
        size: every image is resized to size×size pixels.
        channels: 1 (grey) or 3 (RGB).
        **options: the common subset/augmentation options of ``Dataset``.
    """

    def __init__(
        self, *, root: str | os.PathLike, size: int, channels: int, **options: Any
    ) -> None:
        if not isinstance(root, str | os.PathLike) or not str(root).strip():
            raise ValueError(f"root must be the directory holding {LAYOUT}, got {root!r}")
        self.root = Path(root).expanduser().absolute()  # absolute, not resolved: the user's path
        self.size = at_least("size", size, 1)
        self.channels = one_of("channels", channels, tuple(MODES))
        self.class_names: list[str] = []  # set by load(): the sorted train/ folder names
        super().__init__(**options)

    def load(self) -> tuple[Split, Split, int]:
        self.class_names = class_folders(self.root / "train")
        label_of = {name: label for label, name in enumerate(self.class_names)}
        test_names = class_folders(self.root / "test")
        unknown = [name for name in test_names if name not in label_of]
        if unknown:
            raise ConfigError(
                f"{self.root / 'test'} has class folders {unknown} that train/ lacks "
                f"(train/ has {self.class_names}); labels come from train/'s folders"
            )
        train = self.read_split("train", self.class_names, label_of)
        test = self.read_split("test", test_names, label_of)
        return train, test, len(self.class_names)

    def read_split(self, split: str, names: list[str], label_of: dict[str, int]) -> Split:
        """Every image of ``root/split/<name>/`` for the given class names, labelled."""
        images: list[np.ndarray] = []
        labels: list[int] = []
        for name in names:
            files = image_files(self.root / split / name)
            images.extend(read_image(path, self.size, self.channels) for path in files)
            labels.extend([label_of[name]] * len(files))
        return split_from_images(np.stack(images), np.array(labels, dtype=np.int64))


def class_folders(directory: Path) -> list[str]:
    """The sorted names of the class folders in ``directory`` (hidden ones skipped)."""
    if not directory.is_dir():
        raise ConfigError(f"{directory} not found: a folder dataset needs {LAYOUT}")
    names = sorted(p.name for p in directory.iterdir() if p.is_dir() and not hidden(p))
    if not names:
        raise ConfigError(f"{directory} holds no class folders: a folder dataset needs {LAYOUT}")
    return names


def image_files(directory: Path) -> list[Path]:
    """The sorted .png/.jpg/.jpeg files of one class folder (other and hidden files skipped)."""
    files = sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and not hidden(p) and p.suffix.lower() in SUFFIXES
    )
    if not files:
        raise ConfigError(f"{directory} holds no {'/'.join(SUFFIXES)} images")
    return files


def hidden(path: Path) -> bool:
    return path.name.startswith(".")


def read_image(path: Path, size: int, channels: int) -> np.ndarray:
    """One image as (size, size, channels) uint8, or a ConfigError naming the file."""
    try:
        with Image.open(path, formats=FORMATS) as image:
            converted = image.convert(MODES[channels])
    # UnidentifiedImageError (not PNG/JPEG) and truncated files are OSErrors; a decompression
    # bomb (Pillow's pixel limit) is its own error.
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ConfigError(f"{path} is not a readable PNG or JPEG image ({error})") from None
    if converted.size != (size, size):
        converted = converted.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(converted, dtype=np.uint8).reshape(size, size, channels)
