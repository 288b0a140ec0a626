"""Every file a re-evaluation writes is placed by the run folder, never by a value read from disk.

Each case crafts a run folder whose stored files name a place OUTSIDE (in tmp_path, beside the
run) and checks on disk that nothing appears there, with one line naming the key.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

from advflat.cli.evaluate import main
from advflat.core.errors import ConfigError
from advflat.core.loading import without_stored_writes
from advflat.data.hdf5 import HDF5, write_split
from advflat.evaluation.snapshot_results import files_dir, result_files
from advflat.models import MLP
from advflat.report.collect import gather
from tests.setups import MLP_CONFIG

INPUT_SHAPE = [1, 8, 8]
DIGITS = {"_target_": "advflat.data.Digits", "train_first": 20, "test_first": 10}
CLEAN = {"_target_": "advflat.evaluation.CleanPerformance", "split": "test", "first": None}


def evaluation_with(**metrics: Any) -> dict[str, Any]:
    return {
        "_target_": "advflat.evaluation.Evaluation",
        "epsilon": 0.1,
        "step_size": 0.05,
        "seed": 0,
        "metrics": {"clean": CLEAN, **metrics},
    }


def crafted_run(run_dir: Path, config: dict[str, Any] | None) -> Path:
    """A run folder with an untrained digits MLP as final.pt, which stores ``config`` as the
    run's config (None: stores none)."""
    (run_dir / "checkpoints").mkdir(parents=True)
    model = MLP(num_classes=10, input_shape=INPUT_SHAPE, hidden=[16])
    state = {"format": 1, "epoch": 1, "model": model.state_dict()}
    state["model_config"] = {**MLP_CONFIG, "num_classes": 10, "input_shape": INPUT_SHAPE}
    if config is not None:
        state["config"] = config
    torch.save(state, run_dir / "checkpoints" / "final.pt")
    return run_dir


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_stored_autoattack_state_file_outside_the_run_is_replaced_by_the_runs_own(
    tmp_path, caplog
):
    outside = tmp_path / "outside" / "x.pt"
    attack = {
        "_target_": "advflat.attacks.AutoAttack",
        "epsilon": 0.1,
        "version": "custom",
        "attacks": [
            {"_target_": "advflat.attacks.APGD", "epsilon": 0.1, "steps": 2, "restarts": 1}
        ],
        "state_file": str(outside),
    }
    autoattack = {"_target_": "advflat.evaluation.AutoAttackRobustness", "first": 4}
    evaluation = evaluation_with(autoattack={**autoattack, "batch_size": 2, "attack": attack})
    run = crafted_run(tmp_path / "run", {"seed": 0, "device": "cpu", "dataset": DIGITS,
                                         "evaluation": evaluation})  # fmt: skip
    caplog.set_level(logging.INFO)
    main([str(run)])
    assert not outside.parent.exists()
    [result] = result_files(run / "checkpoints" / "final.pt")
    assert "test/robust_error/autoattack" in json.loads(result.read_text())
    [line] = [w for w in warnings_of(caplog) if "state_file" in w]
    assert "evaluation.metrics.autoattack.attack.state_file" in line and "\n" not in line
    # The progress went to the evaluation's own folder, named by the config's hash.
    used = without_stored_writes(evaluation, "x")
    assert (files_dir(run / "checkpoints" / "final.pt", used) / "autoattack_state.pt").is_file()


def test_a_stored_download_is_switched_off_and_the_outside_root_is_never_created(
    tmp_path, caplog, monkeypatch
):
    import torchvision.datasets.mnist as mnist

    def no_network(*args, **kwargs):
        raise AssertionError("a stored config made advflat download")

    monkeypatch.setattr(mnist.MNIST, "download", no_network)
    root = tmp_path / "outside" / "mnist"
    dataset = {"_target_": "advflat.data.MNIST", "root": str(root), "download": True}
    run = crafted_run(tmp_path / "run", {"seed": 0, "device": "cpu", "dataset": dataset,
                                         "evaluation": evaluation_with()})  # fmt: skip
    with pytest.raises(SystemExit) as exited:
        main([str(run)])
    assert exited.value.code == 2
    assert not (tmp_path / "outside").exists()
    [line] = [w for w in warnings_of(caplog) if "download" in w]
    assert "dataset.download = True is not used" in line
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and f"MNIST not found in {root}" in errors[0]


def test_without_stored_writes_replaces_exactly_the_keys_that_choose_a_place_to_write():
    config = {
        "dataset": {"root": "/data/cifar10", "download": True},
        "evaluation": {
            "metrics": {
                "autoattack": {"attack": {"state_file": "/x.pt", "epsilon": 0.1}},
                "landscape": {"output_dir": "/elsewhere", "steps": [1, 2]},
            }
        },
    }
    confined = without_stored_writes(config, "f")
    assert confined == {
        "dataset": {"root": "/data/cifar10", "download": False},
        "evaluation": {
            "metrics": {
                "autoattack": {"attack": {"state_file": None, "epsilon": 0.1}},
                "landscape": {"output_dir": None, "steps": [1, 2]},
            }
        },
    }
    assert config["dataset"]["download"] is True  # the input is left as it was


def hdf5_folder(root: Path) -> Path:
    images = np.zeros((4, 4, 4, 1), dtype=np.uint8)
    labels = np.arange(4) % 2
    write_split(root, "train", images, labels)
    write_split(root, "test", images, labels)
    return root


def test_an_hdf5_dataset_stored_in_an_external_file_is_refused_unread(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(bytes(range(64)))  # stands for /etc/passwd
    root = hdf5_folder(tmp_path / "data")
    with h5py.File(root / "train_images.h5", "w") as handle:
        handle.create_dataset("tensor", (4, 4, 4), "u1", external=[(str(secret), 0, 64)])
    with pytest.raises(ConfigError, match="keeps its data in other files") as raised:
        HDF5(root=str(root))
    assert str(secret) in str(raised.value) and "\n" not in str(raised.value)


def test_a_virtual_hdf5_dataset_is_refused_unread(tmp_path):
    root = hdf5_folder(tmp_path / "data")
    source = tmp_path / "source.h5"
    with h5py.File(source, "w") as handle:
        handle.create_dataset("bytes", data=np.arange(64, dtype=np.uint8).reshape(4, 4, 4))
    layout = h5py.VirtualLayout(shape=(4, 4, 4), dtype="u1")
    layout[:] = h5py.VirtualSource(str(source), "bytes", shape=(4, 4, 4))
    with h5py.File(root / "test_images.h5", "w") as handle:
        handle.create_virtual_dataset("tensor", layout)
    with pytest.raises(ConfigError, match="is a virtual dataset mapping") as raised:
        HDF5(root=str(root))
    assert str(source) in str(raised.value)


def test_hydra_overrides_are_never_a_source_of_config_for_advflat_eval(tmp_path, caplog):
    outside = tmp_path / "outside"
    run = crafted_run(tmp_path / "run", None)  # no stored config anywhere
    (run / ".hydra").mkdir()
    lines = ["dataset=mnist", f"dataset.root={outside}", "dataset.download=true"]
    (run / ".hydra" / "overrides.yaml").write_text(json.dumps(lines))
    before = sorted(run.rglob("*"))
    with pytest.raises(SystemExit) as exited:
        main([str(run)])
    assert exited.value.code == 2
    assert "carries no run config" in caplog.text
    assert not outside.exists() and sorted(run.rglob("*")) == before


@pytest.mark.parametrize("content", ["42", "{a: 1}", "[1, 'seed=3', {b: 2}]"])
def test_the_report_reads_hydra_overrides_only_as_labels_and_notes_any_other_shape(
    tmp_path, content
):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "metrics.json").write_text('{"test/clean_error": 0.5}')
    (run / ".hydra" / "overrides.yaml").write_text(content)
    [found], notes = gather(tmp_path)
    assert found.overrides == {}  # no label is read from a malformed file, not even one line
    [note] = notes
    assert "overrides.yaml" in note
