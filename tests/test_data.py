"""Datasets, subsets, augmentations, the HDF5 layout and its converter (offline, tiny files)."""

from __future__ import annotations

import gzip
import itertools
import pickle
import socket
import struct
from pathlib import Path
from urllib.error import URLError

import h5py
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from sklearn.datasets import load_digits

from advflat.core.config import build
from advflat.core.errors import ConfigError
from advflat.data import (
    CIFAR10,
    CIFAR100,
    HDF5,
    MNIST,
    SVHN,
    AutoAugmentCutout,
    CropFlip,
    Cutout,
    Digits,
    PseudoLabelled,
    Split,
)
from advflat.data.convert import main as convert_main
from advflat.data.idx import read_idx
from tests.conftest import CONF

DATASET_OPTIONS = ["digits", "mnist", "cifar10", "cifar100", "svhn", "hdf5", "cifar10_autoaugment"]


# --- digits and subsets ------------------------------------------------------------------------


def test_digits_follow_sklearn_order_with_1500_train_and_297_test():
    reference = load_digits()
    data = Digits()
    assert data.train.x.shape == (1500, 1, 8, 8) and data.test.x.shape == (297, 1, 8, 8)
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    assert data.num_classes == 10 and data.input_shape == (1, 8, 8)
    assert float(data.train.x.min()) == 0.0 and float(data.train.x.max()) == 1.0  # 16 / 16
    expected = torch.from_numpy(reference.images).float() / 16
    assert torch.equal(data.train.x[:, 0], expected[:1500])
    assert torch.equal(data.test.x[:, 0], expected[1500:])
    assert data.train.y[0] == reference.target[0] and data.train.y[-1] == reference.target[1499]
    assert data.test.y[0] == reference.target[1500] and data.test.y[-1] == reference.target[-1]
    assert data.mean == pytest.approx([float(data.train.x.mean())], rel=1e-5)


def test_first_and_index_subsets_pick_exactly_those_examples():
    full = Digits()
    data = Digits(train_first=10, test_indices=[5, 0, 296])
    assert torch.equal(data.train.x, full.train.x[:10])
    assert torch.equal(data.train.y, full.train.y[:10])
    assert torch.equal(data.test.x, full.test.x[[5, 0, 296]])
    assert torch.equal(data.test.y, full.test.y[[5, 0, 296]])
    # The model's normalization describes the images it trains on: the subset.
    assert data.mean == pytest.approx([float(full.train.x[:10].mean())], rel=1e-5)
    assert torch.equal(Digits(train_indices=list(range(10))).train.x, data.train.x)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"train_first": 5, "train_indices": [1]}, "give train_first or train_indices, not both"),
        ({"train_first": 0}, "train_first must be >= 1"),
        ({"test_first": 298}, "test_first must be <= 297"),
        ({"test_indices": [0, 297]}, "test_indices must lie in [0, 296]"),
        ({"train_indices": []}, "train_indices must not be empty"),
        ({"augmentation": 3}, "augmentation must be callable"),
    ],
)
def test_bad_subset_options_name_the_option(options, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Digits(**options)


def test_dataset_options_build_with_their_augmentation():
    option = {name: OmegaConf.load(CONF / "dataset" / f"{name}.yaml") for name in DATASET_OPTIONS}
    digits = build(option["digits"], "dataset")
    assert isinstance(digits, Digits) and digits.augmentation is None
    option["digits"].train_first = 0
    with pytest.raises(ConfigError, match=r"^dataset\.train_first must be >= 1"):
        build(option["digits"], "dataset")
    for name in ("cifar10", "cifar100", "svhn"):
        assert isinstance(build(option[name].augmentation), CropFlip)
        assert option[name].root.endswith(f"/{name}") and option[name].download is False
    assert isinstance(build(option["cifar10_autoaugment"].augmentation), AutoAugmentCutout)
    assert OmegaConf.is_missing(option["hdf5"], "root")


def test_batches_keep_the_order_and_end_with_the_last_partial_batch():
    # Evaluation (flatness, robust losses) batches the set in order; no example may be dropped.
    split = Split(torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10))
    batches = list(split.batches(4))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([y for _, y in batches]), torch.arange(10))
    assert torch.equal(torch.cat([x for x, _ in batches]).flatten(), torch.arange(10.0))


def test_shuffled_batches_cover_every_example_exactly_once_per_epoch():
    split = Split(torch.zeros(23, 1, 2, 2), torch.arange(23))
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        seen = torch.cat([y for _, y in split.batches(5, shuffle=True, generator=generator)])
        assert sorted(seen.tolist()) == list(range(23))
        assert not torch.equal(seen, torch.arange(23))  # actually shuffled
    dropped = torch.cat([y for _, y in split.batches(5, shuffle=True, drop_last=True)])
    assert len(dropped) == 20 and len(set(dropped.tolist())) == 20


# --- augmentations -----------------------------------------------------------------------------


def test_crop_flip_output_is_a_shifted_crop_of_the_padded_image_or_its_mirror():
    H = W = 3
    image = (torch.arange(1, 1 + H * W, dtype=torch.float32) / 9).view(1, 1, H, W)  # distinct
    x = image.repeat(300, 1, 1, 1)
    out = CropFlip(padding=1, flip=True)(x, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(image[0, 0], (1, 1, 1, 1))  # (5, 5)
    candidates = {}  # (top, left, mirrored) -> the 3×3 crop it yields
    for top, left in itertools.product(range(3), range(3)):
        crop = padded[top : top + H, left : left + W]
        candidates[top, left, False], candidates[top, left, True] = crop, crop.flip(-1)
    seen = set()
    for crop in out[:, 0]:
        matches = [key for key, candidate in candidates.items() if torch.equal(crop, candidate)]
        assert len(matches) == 1, crop
        seen.add(matches[0])
    assert len(seen) == 18  # all 9 offsets, each plain and mirrored, occur in 300 draws


def test_crop_flip_shape_range_identity_and_determinism():
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    out = CropFlip(padding=4)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(CropFlip(padding=0, flip=False)(x, torch.Generator()), x)
    again = CropFlip(padding=4)(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert not torch.equal(out, CropFlip(padding=4)(x, torch.Generator().manual_seed(1)))
    # Only horizontal flips: with no padding each image is itself or its left-right mirror.
    flipped = CropFlip(padding=0)(x, torch.Generator().manual_seed(0))
    for a, b in zip(flipped, x, strict=True):
        assert torch.equal(a, b) or torch.equal(a, b.flip(-1))


def test_augmentations_draw_only_from_the_given_generator():
    x = torch.rand(4, 3, 8, 8)
    state = torch.get_rng_state()
    CropFlip(padding=4)(x, torch.Generator().manual_seed(0))
    Cutout(size=4)(x, torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), state)


def zero_rectangle(image: torch.Tensor) -> tuple[int, int, int, int]:
    """(first row, rows, first column, columns) of the zeros of a (C, H, W) image of ones."""
    zero = (image == 0).all(dim=0)  # (H, W)
    rows = zero.any(dim=1).nonzero().flatten()
    cols = zero.any(dim=0).nonzero().flatten()
    r0, c0, h, w = int(rows[0]), int(cols[0]), len(rows), len(cols)
    assert zero.sum() == h * w and zero[r0 : r0 + h, c0 : c0 + w].all(), "not one rectangle"
    return r0, h, c0, w


def test_cutout_zeroes_one_square_centred_in_the_image_and_clipped_at_borders():
    H = W = 32
    out = Cutout(size=16)(torch.ones(400, 3, H, W), torch.Generator().manual_seed(0))
    sides = []
    for image in out:
        for start, side in (zero_rectangle(image)[0:2], zero_rectangle(image)[2:4]):
            # centre c in [0, H): the square [c - 8, c + 8) clipped keeps 8..16 rows.
            assert 8 <= side <= 16
            assert side == 16 or start == 0 or start + side == H
            sides.append(side)
    assert sides.count(16) > len(sides) / 2 and min(sides) == 8  # interior and clipped both seen


def test_autoaugment_cutout_shape_range_and_zero_square():
    x = 0.2 + 0.6 * torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    out = AutoAugmentCutout(cutout=16)(x, torch.Generator().manual_seed(5))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    # The squares depend on the generator alone: replay them on images of ones.
    square = Cutout(size=16)(torch.ones_like(x), torch.Generator().manual_seed(5)) == 0
    assert square.sum() >= 8 * 3 * 8 * 8
    assert (out[square] == 0).all()
    assert (out[~square] != 0).float().mean() > 0.5
    # Reproducible through the global seed (AutoAugment) and the generator (Cutout).
    torch.manual_seed(0)
    assert torch.equal(out, AutoAugmentCutout(cutout=16)(x, torch.Generator().manual_seed(5)))


# --- HDF5 --------------------------------------------------------------------------------------


def write_h5(path: Path, array: np.ndarray, key: str = "tensor") -> None:
    with h5py.File(path, "w") as handle:
        handle.create_dataset(key, data=array)


def write_layout(root: Path, images: dict, labels: dict, key: str = "tensor") -> None:
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        write_h5(root / f"{split}_images.h5", images[split], key)
        write_h5(root / f"{split}_labels.h5", labels[split], key)


def assert_splits_are_the_stored_images(data, raw, labels):
    """Each split holds the stored N×H×W×C uint8 images ``raw`` as float32 N×C×H×W in [0, 1]
    and the stored ``labels`` (N or N×1) as int64."""
    for split in ("train", "test"):
        chosen = data.split(split)
        expected = torch.from_numpy(raw[split]).permute(0, 3, 1, 2).float() / 255
        assert torch.allclose(chosen.x, expected, atol=1e-7)
        assert chosen.x.dtype == torch.float32 and chosen.y.dtype == torch.int64
        assert chosen.y.tolist() == labels[split].reshape(-1).tolist()


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
@pytest.mark.parametrize("label_shape", ["N", "Nx1"])
def test_hdf5_round_trip_converts_nhwc_to_nchw_in_unit_range(tmp_path, dtype, label_shape):
    rng = np.random.default_rng(0)
    raw = {
        s: rng.integers(0, 256, size=(n, 4, 5, 3), dtype=np.uint8)
        for s, n in [("train", 6), ("test", 3)]
    }
    images = raw if dtype == "uint8" else {s: (a / 255).astype(np.float32) for s, a in raw.items()}
    labels = {"train": np.array([0, 1, 4, 2, 1, 0]), "test": np.array([3, 3, 1])}
    if label_shape == "Nx1":
        labels = {s: a[:, None] for s, a in labels.items()}
    write_layout(tmp_path, images, labels, key="whatever")  # the only dataset in each file
    data = HDF5(root=str(tmp_path))
    assert data.num_classes == 5 and data.input_shape == (3, 4, 5)
    assert_splits_are_the_stored_images(data, raw, labels)
    assert HDF5(root=str(tmp_path), num_classes=7, train_first=2).num_classes == 7


def test_hdf5_grey_images_get_one_channel(tmp_path):
    images = {"train": np.zeros((2, 4, 4), np.uint8), "test": np.full((1, 4, 4), 255, np.uint8)}
    write_layout(tmp_path, images, {"train": np.array([0, 1]), "test": np.array([1])})
    data = HDF5(root=str(tmp_path))
    assert data.input_shape == (1, 4, 4) and float(data.test.x.min()) == 1.0


def test_hdf5_missing_file_names_its_path(tmp_path):
    with pytest.raises(ConfigError, match="train_images.h5 not found") as error:
        HDF5(root=str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere" / "train_images.h5") in str(error.value)


GOOD_IMAGES = {"train": np.zeros((2, 4, 4, 1), np.uint8), "test": np.zeros((1, 4, 4, 1), np.uint8)}
GOOD_LABELS = {"train": np.array([0, 1]), "test": np.array([1])}


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        ({"train": np.full((2, 4, 4, 1), 1.5)}, {}, r"float images in \[0, 1\].*\[1.5, 1.5\]"),
        ({"train": np.zeros((2, 3, 8, 8), np.uint8)}, {}, "looks like N×C×H×W"),
        ({"train": np.zeros((2, 4, 4, 1), np.int32)}, {}, "uint8 .* or float images, got int32"),
        ({"test": np.zeros((1, 5, 4, 1), np.uint8)}, {}, "test images are 5×4×1 but train"),
        ({}, {"train": np.array([0, 1, 1])}, "has 2 images but .*train_labels.h5 has 3"),
        ({}, {"train": np.array([0.5, 1.0])}, "integer labels"),
        ({}, {"train": np.array([-1, 1])}, "labels >= 0"),
        ({}, {"train": np.zeros((2, 2), np.int64)}, "labels N or N×1"),
    ],
)
def test_hdf5_bad_contents_are_reported_with_the_file(tmp_path, images, labels, message):
    write_layout(tmp_path, {**GOOD_IMAGES, **images}, {**GOOD_LABELS, **labels})
    with pytest.raises(ConfigError, match=message):
        HDF5(root=str(tmp_path))


def test_hdf5_labels_beyond_num_classes_are_refused(tmp_path):
    write_layout(tmp_path, GOOD_IMAGES, {"train": np.array([0, 3]), "test": np.array([1])})
    with pytest.raises(ConfigError, match="labels go up to 3, but num_classes is 2"):
        HDF5(root=str(tmp_path), num_classes=2)


# --- torchvision sets: messages instead of tracebacks ------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "title", "files"),
    [
        (CIFAR10, "CIFAR-10", "cifar-10-batches-py"),
        (CIFAR100, "CIFAR-100", "cifar-100-python"),
        (SVHN, "SVHN", "train_32x32.mat"),
        (MNIST, "MNIST", "MNIST/raw/"),
    ],
)
def test_missing_files_without_download_name_the_directory_and_stay_offline(
    tmp_path, monkeypatch, dataset, title, files
):
    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    root = tmp_path / "empty"
    with pytest.raises(ConfigError) as error:
        dataset(root=str(root), download=False)
    message = str(error.value)
    assert message.startswith(f"{title} not found in {root}: run with dataset.download=true")
    assert files in message and "\n" not in message


def test_mnist_reads_torchvision_raw_files_as_one_channel_images(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {
        p: rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        for p, n in [("train", 4), ("t10k", 2)]
    }
    for prefix, array in images.items():
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(array, 0x08))
        labels = np.arange(len(array), dtype=np.uint8)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(labels, 0x08))
    data = MNIST(root=str(tmp_path), test_first=1)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert torch.equal(data.train.x[:, 0], torch.from_numpy(images["train"]).float() / 255)
    assert data.train.y.tolist() == [0, 1, 2, 3] and data.test.y.tolist() == [0]


def test_failed_download_is_one_line_naming_the_directory(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", offline)
    with pytest.raises(ConfigError) as error:
        CIFAR10(root=str(tmp_path), download=True)
    message = str(error.value)
    assert message.startswith(f"CIFAR-10 could not be downloaded to {tmp_path} (")
    assert "name resolution" in message and "\n" not in message


# --- IDX files and the converter ---------------------------------------------------------------


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    """The IDX encoding written out by hand: magic, big-endian sizes, big-endian values."""
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_mnist_idx(directory: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in (("images-idx3", images), ("labels-idx1", labels)):
        with gzip.open(directory / f"{prefix}-{name}-ubyte.gz", "wb") as handle:
            handle.write(idx_bytes(array, 0x08))


def test_read_idx_decodes_big_endian_values(tmp_path):
    values = np.array([[1, -2, 70000], [3, 4, -5]], dtype=np.int32)
    (tmp_path / "a.idx").write_bytes(idx_bytes(values, 0x0C))
    decoded = read_idx(tmp_path / "a.idx")
    assert decoded.shape == (2, 3) and np.array_equal(decoded, values)
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ConfigError, match="not an IDX file"):
        read_idx(tmp_path / "bad.idx")
    (tmp_path / "short.idx").write_bytes(idx_bytes(values, 0x0C)[:-3])
    with pytest.raises(ConfigError, match="truncated"):
        read_idx(tmp_path / "short.idx")


def test_converter_round_trips_idx_train_and_test_files(tmp_path):
    rng = np.random.default_rng(0)
    train_images = rng.integers(0, 256, size=(5, 3, 2), dtype=np.uint8)
    test_images = rng.integers(0, 256, size=(2, 3, 2), dtype=np.uint8)
    write_mnist_idx(tmp_path / "raw", "train", train_images, np.array([0, 1, 2, 3, 9], np.uint8))
    write_mnist_idx(tmp_path / "raw", "t10k", test_images, np.array([7, 8], np.uint8))
    assert convert_main(["--idx", str(tmp_path / "raw"), "--out", str(tmp_path / "h5")]) == 0
    data = HDF5(root=str(tmp_path / "h5"))
    assert torch.equal(data.train.x[:, 0], torch.from_numpy(train_images).float() / 255)
    assert torch.equal(data.test.x[:, 0], torch.from_numpy(test_images).float() / 255)
    assert data.train.y.tolist() == [0, 1, 2, 3, 9] and data.test.y.tolist() == [7, 8]
    assert data.num_classes == 10


def test_converter_split_makes_the_first_n_images_the_training_set(tmp_path):
    images = np.arange(4 * 2 * 2, dtype=np.uint8).reshape(4, 2, 2)
    write_mnist_idx(tmp_path / "raw", "t10k", images, np.array([1, 0, 1, 0], np.uint8))
    out = tmp_path / "h5"
    assert convert_main(["--idx", str(tmp_path / "raw"), "--split", "3", "--out", str(out)]) == 0
    data = HDF5(root=str(out))
    assert torch.equal(data.train.x[:, 0], torch.from_numpy(images[:3]).float() / 255)
    assert data.train.y.tolist() == [1, 0, 1] and data.test.y.tolist() == [0]
    assert convert_main(["--idx", str(tmp_path / "raw"), "--out", str(out)]) == 1  # no train-*
    assert convert_main(["--idx", str(tmp_path / "raw"), "--split", "4", "--out", str(out)]) == 1


def write_mnist_t10k(directory: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A small t10k pair in MNIST's own layout: the magic numbers 2051 (images) and 2049 (labels)
    spelled out as in the format's description, 28×28 uint8 pixels, labels 0..9, gzip-compressed.
    """
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255  # the full pixel range
    labels = (np.arange(n) % 10).astype(np.uint8)
    directory.mkdir(parents=True, exist_ok=True)
    header = b"\x00\x00\x08\x03" + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    with gzip.open(directory / "t10k-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(header + images.tobytes())
    with gzip.open(directory / "t10k-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(b"\x00\x00\x08\x01" + n.to_bytes(4, "big") + labels.tobytes())
    return images, labels


def test_converter_splits_an_mnist_test_set_into_train_and_test(tmp_path):
    images, labels = write_mnist_t10k(tmp_path / "raw", 12)
    assert np.array_equal(read_idx(tmp_path / "raw/t10k-images-idx3-ubyte.gz"), images)
    argv = ["--idx", str(tmp_path / "raw"), "--split", "10", "--out", str(tmp_path / "h5")]
    assert convert_main(argv) == 0
    data = HDF5(root=str(tmp_path / "h5"))
    assert len(data.train) == 10 and len(data.test) == 2
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert data.train.x.max() == 1.0 and data.train.x.min() == 0.0
    assert torch.equal(data.test.x[:, 0], torch.from_numpy(images[10:]).float() / 255)
    assert data.train.y.tolist() == labels[:10].tolist() and data.test.y.tolist() == [0, 1]


# --- pseudo-labelled extra data ----------------------------------------------------------------


def tiny_pseudo_labelled() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "data": rng.integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8),
        "extrapolated_targets": np.array([3, 1, 4, 1, 5]),
        "ti_index": np.arange(5),  # present in the original file; ignored
    }


@pytest.mark.parametrize("fmt", ["hdf5", "pickle"])
def test_pseudo_labelled_reader_returns_a_split_from_either_format(tmp_path, fmt):
    content = tiny_pseudo_labelled()
    path = tmp_path / "ti_500K_pseudo_labeled"
    if fmt == "hdf5":
        with h5py.File(path, "w") as handle:
            for key, array in content.items():
                handle.create_dataset(key, data=array)
    else:
        path.write_bytes(pickle.dumps(content))
    split = PseudoLabelled(path=str(path)).load()
    expected = torch.from_numpy(content["data"]).permute(0, 3, 1, 2).float() / 255
    assert split.x.shape == (5, 3, 32, 32) and torch.equal(split.x, expected)
    assert split.y.tolist() == [3, 1, 4, 1, 5] and split.y.dtype == torch.int64
    assert PseudoLabelled(path=str(path), first=2).load().y.tolist() == [3, 1]


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pseudo_labelled_pickles_cannot_run_code_and_missing_files_are_named(tmp_path):
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps({"data": _Evil(), "extrapolated_targets": [0]}))
    with pytest.raises(ConfigError, match="refusing to load builtins.print"):
        PseudoLabelled(path=str(path)).load()
    with pytest.raises(ConfigError, match=str(tmp_path / "absent.pickle")):
        PseudoLabelled(path=str(tmp_path / "absent.pickle"))


# --- on the GPU --------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augmentations_on_gpu_tensors_match_cpu_with_a_cpu_generator():
    x = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for augment in (CropFlip(padding=4), Cutout(size=16)):
        cpu = augment(x, torch.Generator().manual_seed(1))
        gpu = augment(x.cuda(), torch.Generator().manual_seed(1))
        assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)
    out = AutoAugmentCutout(cutout=16)(x.cuda(), torch.Generator().manual_seed(1))
    assert out.device.type == "cuda" and out.shape == x.shape
