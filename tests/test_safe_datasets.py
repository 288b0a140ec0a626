"""CIFAR's pickled batch files are read without running code (tiny fake folders, offline)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from advflat.core.errors import ConfigError
from advflat.data import CIFAR10, CIFAR100

CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


class MakesFolder:
    """Unpickling this calls os.makedirs(path): the shape of a planted batch file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.makedirs, (str(self.path),))


def rows(n: int, seed: int) -> np.ndarray:
    """n CIFAR rows: uint8 (n, 3072), all red, then all green, then all blue pixels."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_batch(path: Path, content: dict, protocol: int = pickle.DEFAULT_PROTOCOL) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(content, protocol=protocol))


def fake_cifar10(root: Path, per_batch: int = 2) -> dict[str, tuple[np.ndarray, list[int]]]:
    """cifar-10-batches-py with bytes keys, as Python 3 re-pickles of the batches have."""
    written = {}
    for i, name in enumerate([*CIFAR10_TRAIN, "test_batch"]):
        data, labels = rows(per_batch, seed=i), [(i + j) % 10 for j in range(per_batch)]
        batch = {b"batch_label": name.encode(), b"data": data, b"labels": labels}
        write_batch(root / "cifar-10-batches-py" / name, batch)
        written[name] = (data, labels)
    write_batch(root / "cifar-10-batches-py" / "batches.meta", {b"label_names": [b"plane"] * 10})
    return written


def as_images(data: np.ndarray) -> torch.Tensor:
    """CIFAR rows as x (N, 3, 32, 32) in [0, 1]: the rows are already channel-major."""
    return torch.from_numpy(data.reshape(-1, 3, 32, 32)).float() / 255


def test_cifar10_batches_load_as_channel_major_images_with_their_labels(tmp_path):
    written = fake_cifar10(tmp_path)
    first = written["data_batch_1"][0]
    first[0, :] = 0
    first[0, 0], first[0, 1024 + 32], first[0, 2048 + 31] = 255, 51, 102  # R(0,0) G(1,0) B(0,31)
    write_batch(
        tmp_path / "cifar-10-batches-py/data_batch_1",
        {b"data": first, b"labels": written["data_batch_1"][1]},
    )
    data = CIFAR10(root=str(tmp_path))
    assert data.train.x.shape == (10, 3, 32, 32) and data.test.x.shape == (2, 3, 32, 32)
    assert data.num_classes == 10 and data.train.y.dtype == torch.int64
    assert data.train.y.tolist() == [label for n in CIFAR10_TRAIN for label in written[n][1]]
    assert data.test.y.tolist() == written["test_batch"][1]
    expected = torch.cat([as_images(written[name][0]) for name in CIFAR10_TRAIN])
    assert torch.equal(data.train.x, expected)
    assert torch.equal(data.test.x, as_images(written["test_batch"][0]))
    assert data.train.x[0, 0, 0, 0] == 1.0 and data.train.x[0, 1, 1, 0] == 51 / 255
    assert data.train.x[0, 2, 0, 31] == 102 / 255 and data.train.x[0].sum() == (255 + 153) / 255


@pytest.mark.parametrize("protocol", [2, 3, 5])
def test_cifar100_reads_fine_labels_from_str_keyed_batches_of_any_protocol(tmp_path, protocol):
    folder = tmp_path / "cifar-100-python"
    train, test = rows(3, seed=0), rows(2, seed=1)
    # str keys: what the original Python 2 files give with encoding="latin1".
    write_batch(
        folder / "train",
        {"data": train, "fine_labels": [99, 0, 42], "coarse_labels": [19, 0, 1]},
        protocol,
    )
    write_batch(folder / "test", {"data": test, "fine_labels": [7, 8], "coarse_labels": [1, 2]})
    data = CIFAR100(root=str(tmp_path))
    assert data.num_classes == 100 and data.input_shape == (3, 32, 32)
    assert data.train.y.tolist() == [99, 0, 42] and data.test.y.tolist() == [7, 8]
    assert torch.equal(data.train.x, as_images(train))
    assert torch.equal(data.test.x, as_images(test))


@pytest.mark.parametrize(
    ("dataset", "folder", "name"),
    [
        (CIFAR10, "cifar-10-batches-py", "data_batch_1"),
        (CIFAR100, "cifar-100-python", "test"),
    ],
)
def test_a_planted_batch_file_runs_no_code_and_fails_in_one_sentence(
    tmp_path, dataset, folder, name
):
    fake_cifar10(tmp_path)
    for split in ("train", "test"):
        write_batch(
            tmp_path / "cifar-100-python" / split, {b"data": rows(1, 0), b"fine_labels": [1]}
        )
    target = tmp_path / "created_by_the_pickle"
    planted = tmp_path / folder / name
    write_batch(planted, {b"data": MakesFolder(target), b"labels": [0], b"fine_labels": [0]})
    with pytest.raises(ConfigError) as error:
        dataset(root=str(tmp_path))
    message = str(error.value)
    assert message.startswith(f"{planted} cannot be read as a {dataset.title} batch file: ")
    assert "refusing to load os.makedirs" in message
    assert message.endswith(".") and "\n" not in message
    assert not any(word in message.lower() for word in ("unsafe", "disable", "weights_only"))
    assert not target.exists()


def test_garbage_and_misshapen_batches_are_one_line_errors_naming_the_file(tmp_path):
    fake_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(b"\x80\x04not a pickle at all")
    with pytest.raises(ConfigError, match=f"^{batch} cannot be read as a CIFAR-10 batch file"):
        CIFAR10(root=str(tmp_path))
    write_batch(batch, {b"data": rows(2, 0).reshape(2, 3, 32, 32), b"labels": [0, 1]})
    with pytest.raises(ConfigError, match=r"'data' must be uint8 rows of 3072 pixels .*2, 3, 32"):
        CIFAR10(root=str(tmp_path))
    write_batch(batch, {b"data": rows(2, 0), b"labels": [0]})
    with pytest.raises(ConfigError, match="'labels' must be 2 integers"):
        CIFAR10(root=str(tmp_path))


def test_a_missing_batch_is_the_one_line_not_found_error(tmp_path):
    fake_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ConfigError) as error:
        CIFAR10(root=str(tmp_path))
    message = str(error.value)
    assert message.startswith(f"CIFAR-10 not found in {tmp_path}: run with dataset.download=true")
    assert "cifar-10-batches-py" in message and "\n" not in message


def test_download_fetches_the_verified_archive_only_when_batches_are_missing(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    calls = []

    def fake_download(url: str, root: str, *, filename: str, md5: str) -> None:
        calls.append((url, root, filename, md5))
        fake_cifar10(Path(root))

    monkeypatch.setattr(cifar, "download_and_extract_archive", fake_download)
    data = CIFAR10(root=str(tmp_path), download=True)
    archive = cifar.CIFAR10
    assert calls[0] == (archive.url, str(tmp_path), archive.filename, archive.tgz_md5)
    assert len(calls) == 1 and len(data.train) == 10  # the test split found the files there
    CIFAR10(root=str(tmp_path), download=True)
    assert len(calls) == 1
