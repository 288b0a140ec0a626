"""``advflat-convert`` (its entry point is checked in the wheel by test_packaging.py): raw
MNIST IDX files in, the HDF5 layout that ``dataset=hdf5`` reads out."""

from __future__ import annotations

import numpy as np
import torch

from advflat.data import HDF5
from advflat.data.convert import main
from tests.test_data import idx_bytes


def test_advflat_convert_turns_uncompressed_idx_files_into_what_the_hdf5_loader_reads(tmp_path):
    rng = np.random.default_rng(1)
    images = {
        "train": rng.integers(0, 256, (4, 5, 3), np.uint8),
        "t10k": rng.integers(0, 256, (3, 5, 3), np.uint8),
    }
    labels = {"train": np.array([9, 0, 4, 2], np.uint8), "t10k": np.array([1, 8, 3], np.uint8)}
    raw = tmp_path / "raw"
    raw.mkdir()
    for prefix in ("train", "t10k"):  # plain files: MNIST's gzip-free spelling
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(images[prefix], 0x08))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(labels[prefix], 0x08))
    assert main(["--idx", str(raw), "--out", str(tmp_path / "h5")]) == 0
    data = HDF5(root=str(tmp_path / "h5"))
    assert data.input_shape == (1, 5, 3) and data.num_classes == 10
    for split, prefix in ((data.train, "train"), (data.test, "t10k")):
        assert torch.equal(split.x[:, 0], torch.from_numpy(images[prefix]).float() / 255)
        assert split.y.tolist() == labels[prefix].tolist()


def test_advflat_convert_fails_with_status_1_on_a_folder_without_idx_files(tmp_path):
    assert main(["--idx", str(tmp_path), "--out", str(tmp_path / "h5")]) == 1
    assert not (tmp_path / "h5").exists()
