"""advflat-convert: a dataset to advflat's HDF5 layout (dataset=hdf5 dataset.root=OUT).

Writes OUT/{train,test}_{images,labels}.h5: images (N, H, W, C) uint8, labels (N,) int64.

    # a torchvision dataset already in ROOT (or fetched there with --download)
    advflat-convert cifar10 --root data/cifar10 --out data/cifar10_h5
    # raw MNIST IDX files (.gz or not): train-* and t10k-* as training and test set ...
    advflat-convert --idx DIR --out OUT
    # ... or all images found, the first N training and the rest test (here 8k/2k of t10k)
    advflat-convert --idx /path/with/t10k-files --split 8000 --out OUT
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from advflat.core.errors import ConfigError
from advflat.data import CIFAR10, CIFAR100, MNIST, SVHN
from advflat.data.hdf5 import write_split
from advflat.data.idx import read_idx

log = logging.getLogger("advflat.convert")

TORCHVISION = {"mnist": MNIST, "cifar10": CIFAR10, "cifar100": CIFAR100, "svhn": SVHN}
IDX_PREFIXES = ("train", "t10k")  # MNIST's names for the training and test files


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="advflat-convert", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("dataset", nargs="?", choices=sorted(TORCHVISION), help="torchvision set")
    source.add_argument("--idx", type=Path, help="directory with raw MNIST IDX files")
    parser.add_argument("--root", type=Path, help="the torchvision dataset's directory")
    parser.add_argument("--download", action="store_true", help="fetch the torchvision set")
    parser.add_argument("--split", type=int, help="with --idx: the first N images train")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    if args.dataset and args.root is None:
        parser.error(f"{args.dataset} needs --root (the directory torchvision reads)")
    if args.split is not None and args.idx is None:
        parser.error("--split works with --idx only")
    if args.split is not None and args.split < 1:
        parser.error(f"--split must be >= 1, got {args.split}")
    return args


def idx_file(directory: Path, name: str) -> Path | None:
    """``name``.gz or ``name`` in ``directory`` (the compressed one first), or None."""
    return next((p for p in (directory / f"{name}.gz", directory / name) if p.is_file()), None)


def idx_pair(directory: Path, prefix: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(images (N, H, W, 1) uint8, labels (N,)) from ``prefix``-*-ubyte[.gz], or None if absent."""
    images_path = idx_file(directory, f"{prefix}-images-idx3-ubyte")
    labels_path = idx_file(directory, f"{prefix}-labels-idx1-ubyte")
    if images_path is None and labels_path is None:
        return None
    if images_path is None or labels_path is None:
        present = images_path or labels_path
        raise ConfigError(f"{present} has no matching {prefix} images/labels file beside it")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1:
        raise ConfigError(f"{images_path}: expected uint8 N×H×W images and N labels")
    if len(images) != len(labels):
        raise ConfigError(f"{images_path} has {len(images)} images, labels {len(labels)}")
    return images[..., None], labels.astype(np.int64)


def from_idx(directory: Path, split: int | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    pairs = {prefix: idx_pair(directory, prefix) for prefix in IDX_PREFIXES}
    present = [pair for pair in pairs.values() if pair is not None]
    if not present:
        raise ConfigError(f"no IDX files (train-/t10k-images-idx3-ubyte[.gz]) in {directory}")
    if split is None:
        train, test = pairs["train"], pairs["t10k"]
        if train is None or test is None:
            raise ConfigError(
                f"{directory} lacks the train- or t10k- IDX files: give --split N to split "
                "the images that are there"
            )
        return {"train": train, "test": test}
    images = np.concatenate([pair[0] for pair in present])
    labels = np.concatenate([pair[1] for pair in present])
    if split >= len(images):
        raise ConfigError(f"--split must be < {len(images)} (the images found), got {split}")
    return {"train": (images[:split], labels[:split]), "test": (images[split:], labels[split:])}


def from_torchvision(name: str, root: Path, download: bool) -> dict[str, tuple]:
    reader = TORCHVISION[name]
    root = root.expanduser().absolute()
    return {
        split: reader.read(root, train=split == "train", download=download, how="--download")
        for split in ("train", "test")
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse(argv)
    try:
        if args.idx is not None:
            splits = from_idx(args.idx, args.split)
        else:
            splits = from_torchvision(args.dataset, args.root, args.download)
    except ConfigError as error:
        log.error("error: %s", error)
        return 1
    for split, (images, labels) in splits.items():
        try:
            write_split(args.out, split, images, labels)
        except OSError as error:
            log.error("error: could not write %s (%s)", args.out, error)
            return 1
        log.info("%s: %d images %s -> %s", split, len(images), images.shape[1:], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
