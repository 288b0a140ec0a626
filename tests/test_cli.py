"""The `advflat` command end to end (subprocesses, like a user types it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT

# The quickstart, shrunk to seconds: 2 epochs, the quick evaluation (the paper protocol's
# flatness, Hessian and landscapes have their own tests and take minutes here).
FAST = [
    "experiment=quickstart",
    "trainer.epochs=2",
    "evaluation=quick",
]


def advflat(*overrides: str, run_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    command = [sys.executable, "-m", "advflat.cli.train", *overrides, f"hydra.run.dir={run_dir}"]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_quickstart_writes_every_promised_output(tmp_path):
    run_dir = tmp_path / "run"
    result = advflat(*FAST, run_dir=run_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in [
        "test/clean_error",
        "test/robust_error/pgd",
        "test/robust_loss/pgd",
        "train/robust_loss/pgd",
        "robust_generalization_gap/pgd",
    ]:
        assert key in metrics, key
    for key in ["test/clean_error", "test/robust_error/pgd"]:
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["robust_generalization_gap/pgd"] == pytest.approx(
        metrics["test/robust_loss/pgd"] - metrics["train/robust_loss/pgd"]
    )
    assert (run_dir / ".hydra" / "config.yaml").exists()
    assert list(run_dir.glob("*.log")), "no log file"
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 2
    assert "test/robust_error/pgd" in result.stdout + result.stderr  # the summary table


BAD_INPUT = [
    (["attack.epsilon=-1"], "attack.epsilon must be > 0"),
    (["attack.steps=0"], "attack.steps must be >= 1"),
    (["trainer.loss.fraction=1.5"], "trainer.loss.fraction must be in (0.0, 1.0]"),
    (["attack.norm=l3"], "attack.norm must be one of"),
    (["dataset=hdf5", "dataset.root=/nonexistent/advflat"], "/nonexistent/advflat"),
    (["dataset=cifar10", "dataset.root={tmp}/empty", "model=resnet18"], "{tmp}/empty"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_INPUT)
def test_bad_input_stops_before_training_with_one_line_and_no_traceback(
    tmp_path, overrides, message
):
    overrides = [o.replace("{tmp}", str(tmp_path)) for o in overrides]
    result = advflat("experiment=quickstart", *overrides, run_dir=tmp_path / "run")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message.replace("{tmp}", str(tmp_path)) in output, output
    assert "Traceback" not in output
    assert not (tmp_path / "run" / "checkpoints").exists(), "training started"
    assert not (tmp_path / "run").exists(), "the rejected command left its empty run folder"


def test_corrupt_checkpoint_in_run_directory_is_reported_not_trained_over(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"truncated")
    result = advflat(*FAST, run_dir=run_dir)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "corrupt or not an advflat checkpoint" in output
    assert "Traceback" not in output
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == b"truncated"
