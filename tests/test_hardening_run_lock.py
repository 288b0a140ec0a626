"""One process per run folder: a second trainer or evaluator is refused, naming the holder's PID,
and a refused ``advflat`` leaves the folder exactly as it was (Hydra's files included)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from advflat.cli.run_folder import check_before_hydra, composed_config
from advflat.core.errors import ConfigError
from advflat.runs.run_lock import hold, holds, release
from tests.conftest import ROOT
from tests.test_cli import advflat
from tests.test_hardening_paths import DIGITS, crafted_run, evaluation_with

HOLDER = (
    "import sys, time\n"
    "from advflat.runs.run_lock import hold\n"
    "hold(sys.argv[1], 'training')\n"
    "print('held', flush=True)\n"
    "time.sleep(120)\n"
)


@pytest.fixture
def holder():
    """Start a process that holds a folder's lock; yields a function folder -> its PID."""
    started: list[subprocess.Popen] = []

    def hold_in_another_process(folder: Path) -> int:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(folder)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        started.append(process)
        assert process.stdout is not None and process.stdout.readline().strip() == "held"
        return process.pid

    yield hold_in_another_process
    for process in started:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_second_process_is_refused_with_the_holders_pid_until_the_holder_dies(tmp_path, holder):
    pid = holder(tmp_path)
    with pytest.raises(ConfigError, match=f"in use by process {pid}; evaluation refused"):
        hold(tmp_path, "evaluation")
    assert not holds(tmp_path)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    hold(tmp_path, "evaluation")  # the operating system released the dead holder's lock
    assert holds(tmp_path)
    hold(tmp_path, "evaluation")  # taking it again in the same process is a no-op
    release(tmp_path)
    assert not holds(tmp_path)


def test_advflat_eval_of_a_folder_in_use_is_one_line_naming_the_pid_and_writes_nothing(
    tmp_path, holder, caplog
):
    from advflat.cli.evaluate import main

    config = {"seed": 0, "device": "cpu", "dataset": DIGITS, "evaluation": evaluation_with()}
    run = crafted_run(tmp_path / "run", config)
    pid = holder(run)
    before = contents(run)
    with pytest.raises(SystemExit) as exited:
        main([str(run)])
    assert exited.value.code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and f"in use by process {pid}" in errors[0]
    assert contents(run) == before


def hydra_files(run: Path, overrides: list[str]) -> None:
    """What an earlier run left in .hydra (its own, recognisable content)."""
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(json.dumps(overrides))
    (run / ".hydra" / "config.yaml").write_text("# the earlier run's config\n")
    (run / "train.log").write_text("the earlier run's log\n")


def test_advflat_in_a_folder_in_use_is_refused_before_hydra_writes_anything(tmp_path, holder):
    run = tmp_path / "run"
    hydra_files(run, ["experiment=quickstart"])
    pid = holder(run)
    before = contents(run)
    result = advflat("experiment=quickstart", run_dir=run)
    assert result.returncode == 2
    assert f"in use by process {pid}; training refused" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert contents(run) == before


def test_rerunning_a_finished_folder_with_other_overrides_is_refused_and_changes_nothing(
    tmp_path,
):
    run = tmp_path / "run"
    trained = ["experiment=quickstart", "trainer.epochs=2"]
    hydra_files(run, trained)
    (run / "config.json").write_text(json.dumps(composed_config(trained)))
    (run / "metrics.json").write_text('{"test/clean_error": 0.5}')
    before = contents(run)
    result = advflat("experiment=quickstart", "trainer.epochs=3", run_dir=run)
    assert result.returncode == 2
    assert "holds a run with another config (config.json; differs in trainer.epochs)" in (
        result.stderr
    )
    assert "Traceback" not in result.stdout + result.stderr
    assert contents(run) == before


def test_the_same_overrides_pass_the_check_and_hold_the_folder(tmp_path):
    run = tmp_path / "run"
    trained = ["experiment=quickstart", "trainer.epochs=2"]
    run.mkdir()
    (run / "config.json").write_text(json.dumps(composed_config(trained)))
    check_before_hydra([*trained, f"hydra.run.dir={run}"])
    assert holds(run)
    release(run)


def test_training_in_a_folder_in_use_is_refused_before_anything_is_built(tmp_path, holder):
    from omegaconf import OmegaConf

    from advflat.runs.pipeline import run_experiment

    pid = holder(tmp_path)
    before = contents(tmp_path)
    with pytest.raises(ConfigError, match=f"in use by process {pid}; training refused"):
        run_experiment(OmegaConf.create({"device": "cpu", "seed": 0}), tmp_path)
    assert contents(tmp_path) == before
