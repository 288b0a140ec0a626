"""Your own data as a folder of images per class or as one .npz archive (tiny files in tmp_path):
what is loaded equals what was written, labels follow the class folders, and every bad file or
option fails with one line naming it."""

from __future__ import annotations

import pathlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advflat.core.config import build
from advflat.core.errors import ConfigError
from advflat.data import Arrays, Folder
from tests.test_data import assert_splits_are_the_stored_images
from tests.test_validation import build_error, composed

# --- folder of images per class ----------------------------------------------------------------


def pixels(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


def as_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """(N, H, W, C) uint8 images as the (N, C, H, W) float tensor in [0, 1] a dataset holds."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


def bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """What Pillow's bilinear resize makes of ``image`` at size×size."""
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def write_classes(root: Path, split: str, counts: dict[str, int], shape=(4, 5, 3)) -> dict:
    """PNGs root/split/<class>/<i>.png of random pixels; {class: [image (H, W, C)]}."""
    written: dict[str, list[np.ndarray]] = {}
    for offset, (name, count) in enumerate(counts.items()):
        written[name] = [pixels(100 * offset + i, shape) for i in range(count)]
        for i, image in enumerate(written[name]):
            write_png(
                root / split / name / f"{i}.png", image.squeeze(-1) if shape[-1] == 1 else image
            )
    return written


def test_folder_images_equal_the_written_pixels_with_labels_from_sorted_class_folders(tmp_path):
    # Written in unsorted order; test/ lacks "cat", which keeps its label 1 from train/.
    train = write_classes(tmp_path, "train", {"dog": 2, "bird": 3, "cat": 1})
    test = write_classes(tmp_path, "test", {"dog": 1, "bird": 2})
    data = Folder(root=str(tmp_path), size=4, channels=3)
    assert data.class_names == ["bird", "cat", "dog"] and data.num_classes == 3
    assert data.input_shape == (3, 4, 4)
    assert data.train.y.tolist() == [0, 0, 0, 1, 2, 2] and data.test.y.tolist() == [0, 0, 2]
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    # 4×5 images resized to 4×4: compare against Pillow's bilinear resize of what was written.
    resized = [bilinear(image, 4) for name in ("bird", "cat", "dog") for image in train[name]]
    assert torch.equal(data.train.x, as_tensor(resized))
    resized = [bilinear(image, 4) for name in ("bird", "dog") for image in test[name]]
    assert torch.equal(data.test.x, as_tensor(resized))


def test_folder_images_of_the_stated_size_are_loaded_bit_for_bit(tmp_path):
    train = write_classes(tmp_path, "train", {"a": 2, "b": 1}, shape=(6, 6, 3))
    test = write_classes(tmp_path, "test", {"b": 2}, shape=(6, 6, 3))
    data = Folder(root=str(tmp_path), size=6, channels=3)
    assert torch.equal(data.train.x, as_tensor(train["a"] + train["b"]))
    assert torch.equal(data.test.x, as_tensor(test["b"]))
    assert data.test.y.tolist() == [1, 1]


def test_folder_grey_images_get_one_channel_and_colour_ones_are_converted(tmp_path):
    grey = write_classes(tmp_path, "train", {"a": 2}, shape=(4, 4, 1))
    write_png(tmp_path / "test" / "a" / "rgb.png", np.full((4, 4, 3), 200, np.uint8))
    data = Folder(root=str(tmp_path), size=4, channels=1)
    assert data.input_shape == (1, 4, 4)
    assert torch.equal(data.train.x, as_tensor(grey["a"]))
    assert torch.equal(data.test.x, torch.full((1, 1, 4, 4), 200 / 255))  # grey RGB stays 200


def test_folder_reads_jpegs_resizes_and_skips_other_and_hidden_files(tmp_path):
    # A constant image stays constant under resizing and (nearly) under JPEG compression.
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "photo.jpg")
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "photo.jpg").rename(tmp_path / "train" / "a" / "photo.JPG")
    (tmp_path / "train" / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "a" / "._photo.png").write_bytes(b"AppleDouble junk")
    (tmp_path / "train" / ".cache").mkdir()  # a hidden folder is not a class
    write_png(tmp_path / "test" / "a" / "x.png", np.zeros((8, 8, 3), np.uint8))
    data = Folder(root=str(tmp_path), size=2, channels=3)
    assert data.class_names == ["a"] and len(data.train) == 1 and data.input_shape == (3, 2, 2)
    red = data.train.x[0]
    assert float(red[0].min()) > 0.95 and float(red[1:].max()) < 0.05


def good_folder(root: Path) -> Path:
    write_classes(root, "train", {"a": 1, "b": 1})
    write_classes(root, "test", {"a": 1})
    return root


def remove_tree(directory: Path) -> None:
    shutil.rmtree(directory)


def empty_tree(directory: Path) -> None:
    shutil.rmtree(directory)
    directory.mkdir()


def remove_file(path: Path) -> None:
    path.unlink()


def add_class_c(directory: Path) -> None:
    write_png(directory / "c" / "0.png", np.zeros((4, 4, 3), np.uint8))


def truncate_png(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n but cut off")


def plant_eps(path: Path) -> None:
    # Pillow would hand an EPS to Ghostscript; under a .png name it must not even be tried.
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 4 4\nshowpage\n")


@pytest.mark.parametrize(
    ("damage", "where", "message"),
    [
        (
            remove_tree,
            "test",
            r"/test not found: a folder dataset needs root/train/<class>/\*\.png",
        ),
        (empty_tree, "train", r"/train holds no class folders"),
        (remove_file, "train/b/0.png", r"/train/b holds no \.png/\.jpg/\.jpeg images"),
        (add_class_c, "test", r"/test has class folders \['c'\] that train/ lacks"),
        (truncate_png, "train/a/0.png", r"/train/a/0\.png is not a readable PNG or JPEG image"),
        # "cannot identify": refused before decoding, not failed in Ghostscript.
        (plant_eps, "train/a/0.png", r"/train/a/0\.png is not a readable .* \(cannot identify"),
    ],
)
def test_a_bad_folder_is_one_line_naming_the_path(tmp_path, damage, where, message):
    root = good_folder(tmp_path / "data")
    damage(root / where)
    with pytest.raises(ConfigError, match=message) as error:
        Folder(root=str(root), size=4, channels=3)
    assert str(root) in str(error.value) and "\n" not in str(error.value)


def test_a_missing_folder_root_names_the_train_folder_and_the_layout(tmp_path):
    with pytest.raises(ConfigError) as error:
        Folder(root=str(tmp_path / "nowhere"), size=4, channels=3)
    assert str(error.value) == (
        f"{tmp_path / 'nowhere' / 'train'} not found: a folder dataset needs "
        "root/train/<class>/*.png|jpg and root/test/<class>/*.png|jpg"
    )


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("dataset.size=0", "dataset.size must be >= 1, got 0"),
        ("dataset.size=2.5", "dataset.size must be an integer, got 2.5"),
        ("dataset.channels=2", "dataset.channels must be one of 1, 3, got 2"),
        ("dataset.root=''", "dataset.root must be the directory holding root/train/<class>/"),
    ],
)
def test_folder_options_are_checked_before_any_file_is_read(tmp_path, override, expected):
    # root points nowhere: an option error must come first.
    cfg = composed(
        "dataset=folder",
        f"dataset.root={tmp_path}/nowhere",
        "dataset.size=4",
        "dataset.channels=3",
        override,
    )
    assert build_error(cfg, "dataset").startswith(expected)


@pytest.mark.parametrize("key", ["root", "size", "channels"])
def test_folder_option_file_requires_root_size_and_channels(key):
    given = {
        "root": "dataset.root=/data",
        "size": "dataset.size=32",
        "channels": "dataset.channels=3",
    }
    overrides = [value for name, value in given.items() if name != key]
    message = build_error(composed("dataset=folder", *overrides), "dataset")
    assert message.startswith(f"dataset.{key} is required"), message


def test_folder_option_file_builds_the_folder_dataset(tmp_path):
    good_folder(tmp_path)
    cfg = composed(
        "dataset=folder", f"dataset.root={tmp_path}", "dataset.size=4", "dataset.channels=1"
    )
    data = build(cfg.dataset, "dataset")
    assert isinstance(data, Folder) and data.input_shape == (1, 4, 4) and data.augmentation is None


# --- one .npz archive --------------------------------------------------------------------------


def images(n: int, seed: int = 0, shape=(4, 5, 3)) -> np.ndarray:
    return pixels(seed, (n, *shape))


@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
def test_arrays_with_both_splits_equal_what_was_written(tmp_path, dtype):
    raw = {"train": images(5, 0), "test": images(3, 1)}
    stored = {s: a if dtype == "uint8" else (a / 255).astype(dtype) for s, a in raw.items()}
    labels = {"train": np.array([0, 1, 4, 2, 1]), "test": np.array([[3], [3], [1]])}  # N and N×1
    path = tmp_path / "set.npz"
    np.savez(
        path,
        x_train=stored["train"],
        y_train=labels["train"],
        x_test=stored["test"],
        y_test=labels["test"],
    )
    data = Arrays(path=str(path))
    assert data.num_classes == 5 and data.input_shape == (3, 4, 5)
    assert_splits_are_the_stored_images(data, raw, labels)
    if dtype == "uint8":
        assert torch.equal(data.train.x, torch.from_numpy(raw["train"]).permute(0, 3, 1, 2) / 255)
    assert Arrays(path=str(path), num_classes=7, train_first=2).num_classes == 7


def test_a_single_pair_gives_its_last_test_count_examples_to_the_test_split(tmp_path):
    x, y = images(6, shape=(4, 4)), np.array([0, 1, 2, 0, 1, 2])  # grey N×H×W
    path = tmp_path / "pair.npz"
    np.savez_compressed(path, x=x, y=y)
    data = Arrays(path=str(path), test_count=2)
    assert data.input_shape == (1, 4, 4) and data.num_classes == 3
    assert torch.equal(data.train.x[:, 0], torch.from_numpy(x[:4]) / 255)
    assert torch.equal(data.test.x[:, 0], torch.from_numpy(x[4:]) / 255)
    assert data.train.y.tolist() == [0, 1, 2, 0] and data.test.y.tolist() == [1, 2]


class TouchesFile:
    """Unpickling this creates ``path``: proof that a pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


def test_an_object_array_is_refused_without_unpickling_it(tmp_path):
    target = tmp_path / "created_by_the_pickle"
    path = tmp_path / "planted.npz"
    planted = np.array([TouchesFile(target)], dtype=object)
    np.savez(path, x=planted, y=np.array([0]))
    with pytest.raises(ConfigError) as error:
        Arrays(path=str(path), test_count=1)
    assert str(error.value).startswith(f"{path}: x holds Python objects")
    assert not target.exists()


GOOD = {
    "x_train": np.zeros((2, 4, 4, 1), np.uint8),
    "y_train": np.array([0, 1]),
    "x_test": np.zeros((1, 4, 4, 1), np.uint8),
    "y_test": np.array([1]),
}


@pytest.mark.parametrize(
    ("arrays", "options", "message"),
    [
        (
            {"x_train": np.full((2, 4, 4, 1), 1.5)},
            {},
            r"x_train must hold float images in \[0, 1\]",
        ),
        ({"x_train": np.full((2, 4, 4, 1), np.nan)}, {}, r"float images in \[0, 1\]"),
        ({"x_train": np.zeros((2, 3, 8, 8), np.uint8)}, {}, "x_train has shape .* N×C×H×W"),
        ({"x_train": np.zeros((2, 4, 4, 1), np.int32)}, {}, "uint8 .* or float images, got int32"),
        ({"x_train": np.zeros((2, 4, 4, 1), bool)}, {}, "uint8 .* or float images, got bool"),
        ({"x_test": np.zeros((1, 5, 4, 1), np.uint8)}, {}, "test images are 5×4×1 but train"),
        ({"y_train": np.array([0, 1, 1])}, {}, "x_train has 2 images but y_train has 3 labels"),
        ({"y_train": np.array([0.5, 1.0])}, {}, "y_train must hold integer labels"),
        ({"y_train": np.array(["a", "b"])}, {}, "y_train must hold integer labels"),
        ({"y_train": np.array([-1, 1])}, {}, "y_train must hold labels >= 0"),
        ({"y_train": np.array([0, 3])}, {"num_classes": 2}, "labels go up to 3, but num_classes"),
        ({}, {"test_count": 1}, "holds both splits .* test_count splits a single x, y pair"),
        (
            {"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0, 1])},  # both layouts
            {},
            r"holds \['x', 'x_test', 'x_train', 'y', .*; expected an .npz archive holding",
        ),
    ],
)
def test_bad_arrays_are_one_line_naming_the_file_and_array(tmp_path, arrays, options, message):
    path = tmp_path / "set.npz"
    np.savez(path, **{**GOOD, **arrays})
    with pytest.raises(ConfigError, match=message) as error:
        Arrays(path=str(path), **options)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("test_count", "message"),
    [
        (None, "holds a single x, y pair: set test_count"),
        (3, "test_count must be < 3 .*, got 3"),
    ],
)
def test_a_single_pair_needs_a_test_count_below_its_size(tmp_path, test_count, message):
    path = tmp_path / "pair.npz"
    np.savez(path, x=np.zeros((3, 4, 4), np.uint8), y=np.array([0, 1, 0]))
    with pytest.raises(ConfigError, match=message):
        Arrays(path=str(path), test_count=test_count)


def test_a_missing_npy_or_garbage_file_is_one_line_naming_it(tmp_path):
    missing = tmp_path / "nowhere.npz"
    with pytest.raises(ConfigError) as error:
        Arrays(path=str(missing))
    assert str(error.value) == (
        f"{missing} not found: dataset=arrays reads an .npz archive holding "
        "x_train, y_train, x_test, y_test (or x, y and test_count)"
    )
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ConfigError, match=f"^{single} is a single .npy array; expected an .npz"):
        Arrays(path=str(single))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ConfigError, match=f"^{garbage} is not a readable .npz archive"):
        Arrays(path=str(garbage))
    pickled = tmp_path / "pickled.npz"
    pickled.write_bytes(b"\x80\x04K\x01.")  # a pickle of 1
    with pytest.raises(ConfigError, match=f"^{pickled} is not a readable .npz archive"):
        Arrays(path=str(pickled))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("dataset.test_count=0", "dataset.test_count must be >= 1, got 0"),
        ("dataset.num_classes=0", "dataset.num_classes must be >= 1, got 0"),
        ("dataset.path=''", "dataset.path must be an .npz archive holding x_train"),
    ],
)
def test_arrays_options_are_checked_before_the_file_is_read(tmp_path, override, expected):
    cfg = composed("dataset=arrays", f"dataset.path={tmp_path}/nowhere.npz", override)
    assert build_error(cfg, "dataset").startswith(expected)


def test_arrays_option_file_requires_path_and_builds_the_arrays_dataset(tmp_path):
    message = build_error(composed("dataset=arrays"), "dataset")
    assert message.startswith("dataset.path is required"), message
    path = tmp_path / "set.npz"
    np.savez(path, **GOOD)
    data = build(composed("dataset=arrays", f"dataset.path={path}").dataset, "dataset")
    assert isinstance(data, Arrays) and data.input_shape == (1, 4, 4) and data.num_classes == 2
