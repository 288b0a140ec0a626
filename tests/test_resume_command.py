"""``advflat resume=RUN`` continues an interrupted run from its own stored config, and a new run
of a command whose earlier run is unfinished says where that run is."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from advflat.cli.resume import resume_folder, resumed_config
from advflat.cli.run_folder import composed_config, unfinished_twins
from advflat.core.errors import ConfigError
from tests.conftest import ROOT
from tests.test_hardening_interrupt import interrupted

# 300 training digits: seconds per run, and still several epochs to interrupt and resume.
OVERRIDES = [
    "experiment=quickstart",
    "trainer.epochs=6",
    "evaluation=quick",
    "dataset.train_first=300",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}


def advflat(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "advflat.cli.train", *args]
    return subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, check=False)


def scientific(run_dir: Path) -> dict[str, float]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {key: value for key, value in metrics.items() if not key.startswith("cost/")}


def resumed_after_interrupt(run_dir: Path) -> subprocess.CompletedProcess:
    """Interrupt a run after its first saved epoch, then ``advflat resume=RUN`` it."""
    stopped = interrupted(run_dir, signal.SIGINT, OVERRIDES)
    assert stopped.returncode == 130, stopped.stderr
    assert f"resume with: advflat resume={run_dir}" in stopped.stdout + stopped.stderr
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] < 6
    return advflat(f"resume={run_dir}")


def test_resume_trains_an_interrupted_run_on_to_its_last_epoch_with_its_stored_config(tmp_path):
    run_dir = tmp_path / "run"
    resumed = resumed_after_interrupt(run_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run_dir}" in (run_dir / "train.log").read_text()
    history = json.loads((run_dir / "history.json").read_text())
    assert sorted(int(epoch) for epoch in history) == list(range(1, 7))
    assert json.loads((run_dir / "config.json").read_text()) == composed_config(OVERRIDES)


@pytest.mark.slow
def test_resume_ends_with_the_metrics_of_an_uninterrupted_run(tmp_path):
    run_dir, reference = tmp_path / "run", tmp_path / "reference"
    assert resumed_after_interrupt(run_dir).returncode == 0
    uninterrupted = advflat(*OVERRIDES, f"hydra.run.dir={reference}")
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    assert scientific(run_dir) == scientific(reference)


def test_a_new_folder_for_a_command_names_its_unfinished_earlier_run(tmp_path):
    runs = tmp_path / "runs" / "2026-01-01"
    earlier, later = runs / "10-00-00", runs / "11-00-00"
    config = composed_config(OVERRIDES)
    assert config is not None
    (earlier / "checkpoints").mkdir(parents=True)
    torch.save({"config": config, "epoch": 2}, earlier / "checkpoints" / "last.pt")
    assert unfinished_twins(later, config) == [earlier.absolute()]
    assert unfinished_twins(later, composed_config([*OVERRIDES, "seed=1"]) or {}) == []
    (earlier / "metrics.json").write_text("{}")  # finished: nothing to resume
    assert unfinished_twins(later, config) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["resume=run", "seed=1"], "resume=RUN takes no other arguments"),
        (["resume="], "resume= needs a run folder"),
    ],
)
def test_bad_resume_commands_are_one_line(args, message):
    with pytest.raises(ConfigError, match=message):
        resume_folder(args)


def test_resuming_a_folder_without_a_run_is_one_line_and_writes_nothing(tmp_path):
    result = advflat(f"resume={tmp_path}")
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert "nothing to resume there" in output and "Traceback" not in output
    assert list(tmp_path.iterdir()) == []


def test_resuming_a_last_checkpoint_with_a_config_nested_without_end_is_one_line(tmp_path):
    deep: dict = {}
    node = deep
    for _ in range(100):
        node["a"] = {}
        node = node["a"]
    (tmp_path / "checkpoints").mkdir()
    torch.save({"config": deep, "epoch": 1}, tmp_path / "checkpoints" / "last.pt")
    with pytest.raises(ConfigError, match=r"last\.pt.*nests deeper than"):
        resumed_config(tmp_path)
