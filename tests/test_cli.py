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
    "dataset.train_first=300",
]


def command(*args: str) -> subprocess.CompletedProcess:
    """``advflat ARGS``, run from the checkout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    line = [sys.executable, "-m", "advflat.cli.train", *args]
    return subprocess.run(line, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def advflat(*overrides: str, run_dir: Path) -> subprocess.CompletedProcess:
    return command(*overrides, f"hydra.run.dir={run_dir}")


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


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.epoch=3", "unknown key trainer.epoch; did you mean trainer.epochs?"),
        ("attack.stpes=3", "unknown key attack.stpes; did you mean attack.steps?"),
    ],
)
def test_unknown_key_is_refused_naming_the_nearest_valid_key(tmp_path, override, message):
    result = advflat("experiment=quickstart", override, run_dir=tmp_path / "run")
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert message in output
    assert "Traceback" not in output and "is not in struct" not in output  # one line, ours
    assert not (tmp_path / "run").exists(), "refused after Hydra made the run folder"


def test_help_lists_the_commands_and_config_groups_in_one_screen():
    result = command("--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for name in ["advflat", "advflat-eval", "advflat-report", "advflat-convert"]:
        examples = [line for line in lines if line.strip().startswith(f"{name} ")]
        assert len(examples) >= 2, f"{name}: no usage and example lines"  # usage, then example
    for group in ["attack", "dataset", "model", "trainer", "trainer/optimizer", "experiment/paper"]:
        assert any(line.startswith(f"{group}: ") for line in lines), group
    assert "pgd20" in result.stdout and "wrn28_10" in result.stdout  # the options, too
    assert len(lines) < 80 and "_target_" not in result.stdout  # no dump of the config


def test_cfg_job_still_prints_the_composed_config():
    result = command("--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "trainer:" in result.stdout and "epochs: 150" in result.stdout
