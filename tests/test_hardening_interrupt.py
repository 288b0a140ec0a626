"""Ctrl-C or SIGTERM during ``advflat`` training ends with one line saying how far the run got and
the exact command that resumes it, with the shell's exit status for the signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT

# 300 training digits: the first epoch is saved within seconds, 29 more are left to interrupt.
OVERRIDES = [
    "experiment=quickstart",
    "trainer.epochs=30",
    "evaluation=quick",
    "dataset.train_first=300",
]


def default_ctrl_c() -> None:
    """Give the child Ctrl-C's default: a shell that starts a job in the background (``&``,
    nohup, a CI runner) hands it SIGINT ignored, and a Python started with SIGINT ignored
    raises no KeyboardInterrupt, so the run would never see the signal this test sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupted(
    run_dir: Path, signum: int, overrides: list[str] = OVERRIDES
) -> subprocess.CompletedProcess:
    """Start training, send ``signum`` once the first epoch is saved, and wait for the end."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    command = [sys.executable, "-m", "advflat.cli.train", *overrides, f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_ctrl_c,
    )
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoints" / "last.pt").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no epoch finished in time"
        time.sleep(0.05)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_ends_with_one_line_naming_its_epoch_and_the_resume_command(
    tmp_path, signum, status
):
    run_dir = tmp_path / "run"
    result = interrupted(run_dir, signum)
    output = result.stdout + result.stderr
    assert result.returncode == status, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    epoch = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"]
    command = f"advflat {' '.join(OVERRIDES)} hydra.run.dir={run_dir}"
    short = f"advflat resume={run_dir}"
    assert f"interrupted after epoch {epoch}; resume with: {short} (or: {command})" in output
