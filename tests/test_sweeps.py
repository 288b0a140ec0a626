"""Sweeps: the presets expand to the paper's grids on every cluster, a re-launched sweep skips its
finished jobs, and a failed job is reported with its log while the others go on.

The sweep tests run the `advflat` command in subprocesses, like a user; those that start several
(a re-launch, `cluster=local`'s job processes) are `slow`. SLURM is in test_slurm_sweep.py.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from advflat.core.config import build
from advflat.core.errors import ConfigError
from advflat.runs.failed_jobs import (
    FAILURE_FILE,
    FailedJobsSummary,
    failures_since,
    forget_failure,
    record_failure,
)
from advflat.runs.sweep_folders import job_folder
from tests.conftest import CONF, ROOT
from tests.test_configs import RUNTIME, SPECIAL, accepted, target_nodes

CLUSTERS = sorted(p.stem for p in (CONF / "cluster").glob("*.yaml"))
# The paper's grids (docs/training.md and the paper's list of trained models).
GRIDS = {
    "label_smoothing": ("trainer.label_smoothing", [0.1, 0.2, 0.3, 0.4, 0.5]),
    "weight_decay": (
        "trainer.optimizer.weight_decay",
        [0.0, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05],
    ),
    "trades_beta": ("trainer.loss.beta", [1.0, 3.0, 6.0, 9.0]),
    "seeds": ("seed", [0, 1, 2]),
}
ADVFLAT = str(Path(sys.executable).with_name("advflat"))  # the console script, as users type it
LOG = "train.log"  # Hydra's job log; config.yaml names the job (hydra.job.name: train)


def compose_sweep(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def compose_job(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    OmegaConf.resolve(cfg)
    return cfg


def sweep_jobs(cfg: DictConfig, arguments: list[str]) -> list[list[str]]:
    """The jobs Hydra's basic sweeper launches: the preset's grid, then the command line."""
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.params or {}).items()]
    overrides = OverridesParser.create().parse_overrides(params + arguments)
    sweeper = get_object(cfg.hydra.sweeper._target_)
    (jobs,) = sweeper.split_arguments(overrides, None)
    return jobs


def test_every_sweep_of_the_paper_has_a_preset():
    presets = {p.stem for p in (CONF / "experiment" / "sweeps").glob("*.yaml")}
    assert presets == set(GRIDS)


@pytest.mark.parametrize("cluster", CLUSTERS)
@pytest.mark.parametrize("preset", sorted(GRIDS))
def test_sweep_preset_composes_with_every_cluster_into_the_papers_grid(preset, cluster):
    selection = [f"experiment=sweeps/{preset}", f"cluster={cluster}"]
    cfg = compose_sweep(*selection)
    key, grid = GRIDS[preset]
    swept = [dict(o.split("=", 1) for o in job)[key] for job in sweep_jobs(cfg, selection)]
    assert [float(value) for value in swept] == grid
    assert cfg.name == preset
    assert cfg.hydra.sweep.dir == f"outputs/sweeps/{preset}"
    assert cfg.hydra.callbacks.failed_jobs._target_ == "advflat.runs.failed_jobs.FailedJobsSummary"


@pytest.mark.parametrize("preset", sorted(GRIDS))
def test_every_job_of_a_sweep_gets_its_value_binds_and_builds_its_trainer(preset):
    selection = [f"experiment=sweeps/{preset}"]
    key, grid = GRIDS[preset]
    jobs = sweep_jobs(compose_sweep(*selection), selection)
    for job, value in zip(jobs, grid, strict=True):
        cfg = compose_job(*job)
        assert OmegaConf.select(cfg, key) == value
        for path, node in target_nodes(cfg):
            names, required = accepted(get_object(node["_target_"]))
            assert not ({str(k) for k in node} - SPECIAL) - names, (job, path)
            if not node.get("_partial_", False):
                assert not required - set(node) - RUNTIME.get(path, set()), (job, path)
        attack = build(cfg.attack, "attack")
        build(cfg.trainer, "trainer", attack=attack, weight_attack=None)


def test_command_line_values_replace_a_presets_grid_and_multiply_with_it():
    selection = ["experiment=sweeps/label_smoothing"]
    cfg = compose_sweep(*selection)
    jobs = sweep_jobs(cfg, [*selection, "trainer.label_smoothing=0.2,0.3", "seed=0,1"])
    expected = [
        {"experiment=sweeps/label_smoothing", f"trainer.label_smoothing={t}", f"seed={s}"}
        for t in (0.2, 0.3)
        for s in (0, 1)
    ]
    assert [set(job) for job in jobs] == expected


def test_sweep_folders_name_the_experiment_preset_and_not_the_launch_details():
    cfg = compose_sweep("experiment=sweeps/seeds", "cluster=slurm", "name=x", "device=cpu")
    excluded = set(cfg.hydra.job.config.override_dirname.exclude_keys)
    assert {"cluster", "name", "device"} <= excluded
    assert "experiment" not in excluded  # two presets of one sweep must not share a folder
    subdir = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["subdir"]
    assert subdir == "${advflat.job_folder:${hydra:job.override_dirname}}"


def test_job_folder_flattens_preset_paths_and_keeps_the_overrides_readable():
    assert job_folder("experiment=paper/at,seed=1") == "experiment=paper_at,seed=1"
    assert (
        job_folder("trainer.optimizer.weight_decay=5e-4") == "trainer.optimizer.weight_decay=5e-4"
    )
    assert (
        job_folder("trainer.scheduler.milestones=[20,25]") == "trainer.scheduler.milestones=_20,25_"
    )
    assert job_folder("experiment=paper/at") != job_folder("experiment=paper/trades")


def test_job_folder_of_many_overrides_fits_a_file_name_and_stays_unique():
    many = ",".join(f"evaluation.metrics.metric_{i}.attack.steps={i}" for i in range(12))
    other = many.replace("steps=11", "steps=12")
    folder = job_folder(many)
    assert len(folder) == 200 and folder.startswith("evaluation.metrics.metric_0.")
    assert job_folder(many) == folder  # the same command finds the same folder
    assert job_folder(other) != folder and len(job_folder(other)) == 200


# ------------------------------------------------------------ failure records (no subprocess)


def test_a_failure_is_logged_with_traceback_and_recorded_beside_the_run(tmp_path, caplog):
    try:
        raise ValueError("loss is nan\nsecond line")
    except ValueError as error:
        with caplog.at_level(logging.ERROR, logger="advflat.runs.failed_jobs"):
            failure = record_failure(tmp_path, "seed=3", error)
    assert failure.error == "ValueError: loss is nan"
    assert "Traceback" in caplog.text and "seed=3" in caplog.text and str(tmp_path) in caplog.text
    assert json.loads((tmp_path / FAILURE_FILE).read_text())["error"] == failure.error
    forget_failure(tmp_path)
    assert not (tmp_path / FAILURE_FILE).exists()


def test_a_config_error_is_recorded_without_traceback(tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="advflat.runs.failed_jobs"):
        record_failure(tmp_path, "x=1", ConfigError("x must be > 0, got -1"))
    assert "ConfigError: x must be > 0, got -1" in caplog.text
    assert "Traceback" not in caplog.text


def test_summary_names_only_this_sweeps_failures_and_exits_1(tmp_path, caplog):
    old, new, fine = tmp_path / "a=1", tmp_path / "a=2", tmp_path / "a=3"
    record_failure(old, "a=1", RuntimeError("from an earlier launch"))
    callback = FailedJobsSummary()
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    callback.on_multirun_start(config)
    fine.mkdir()
    callback.on_multirun_end(config)  # an earlier launch's failure does not count
    record_failure(new, "a=2", RuntimeError("boom"))
    assert [f.overrides for f in failures_since(tmp_path, callback.start)] == ["a=2"]
    caplog.clear()
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_:
        callback.on_multirun_end(config)
    assert exit_.value.code == 1
    assert "1 job(s) of this sweep failed" in caplog.text
    assert "a=2: RuntimeError: boom" in caplog.text and "a=1" not in caplog.text


# ------------------------------------------------------------------ sweeps, like a user runs them

# The quickstart shrunk to seconds: 200 training and 100 test digits, quick evaluation.
DIGITS = [
    "experiment=quickstart",
    "evaluation=quick",
    "dataset.train_first=200",
    "dataset.test_first=100",
    "trainer.scheduler.milestones=[]",  # quickstart's lr steps (20, 25) lie beyond these runs
]
FAST = [*DIGITS, "trainer.epochs=2"]
# A sweep whose first job is invalid at run time (label smoothing > 1) and whose second is fine.
FAILING = [*DIGITS, "trainer.epochs=1", "trainer.label_smoothing=1.5,0.0"]


def multirun_command(*overrides: str, sweep: Path) -> dict:
    """`advflat -m ...` as subprocess arguments: one math thread per job, like the presets."""
    return {
        "args": [ADVFLAT, "-m", *overrides, f"hydra.sweep.dir={sweep}"],
        "cwd": ROOT,
        "env": {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"},
    }


def multirun(*overrides: str, sweep: Path) -> subprocess.CompletedProcess:
    command = multirun_command(*overrides, sweep=sweep)
    return subprocess.run(**command, capture_output=True, text=True, timeout=600)


def job_dir(sweep: Path, *overrides: str) -> Path:
    """The run folder whose name (comma-separated key=value) holds all of ``overrides``."""
    (found,) = [p for p in sweep.iterdir() if set(overrides) <= set(p.name.split(","))]
    return found


def stamps(run: Path) -> dict[str, int]:
    names = ["metrics.json", "history.json", "checkpoints/last.pt"]
    return {name: (run / name).stat().st_mtime_ns for name in names}


def measured(run: Path) -> dict[str, float]:
    """The run's metrics without the wall-clock ``cost/`` entries (they vary between runs)."""
    metrics = json.loads((run / "metrics.json").read_text())
    return {key: value for key, value in metrics.items() if not key.startswith("cost/")}


@pytest.mark.slow  # two `advflat -m` runs; CI runs the same check on SLURM (test_slurm_sweep.py)
def test_relaunched_sweep_skips_finished_jobs_and_completes_the_unfinished_one(tmp_path):
    sweep = tmp_path / "sweep"
    command = [*FAST, "seed=0,1"]
    first = multirun(*command, sweep=sweep)
    assert first.returncode == 0, first.stdout + first.stderr
    finished, unfinished = job_dir(sweep, "seed=0"), job_dir(sweep, "seed=1")
    before = {run: stamps(run) for run in (finished, unfinished)}
    expected = measured(unfinished)
    # A half-finished sweep: the second job was killed after its last checkpoint.
    (unfinished / "metrics.json").unlink()

    second = multirun(*command, sweep=sweep)
    assert second.returncode == 0, second.stdout + second.stderr
    assert stamps(finished) == before[finished], "a finished job was run again"
    assert "already finished with this config: skipped" in (finished / LOG).read_text()
    assert measured(unfinished) == expected
    assert "resuming from" in (unfinished / LOG).read_text()
    assert stamps(unfinished)["checkpoints/last.pt"] == before[unfinished]["checkpoints/last.pt"]


def check_failed_sweep(result: subprocess.CompletedProcess, sweep: Path) -> dict:
    """The invalid job (first) is reported with its logs; the valid one (second) finished."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    failed, fine = (job_dir(sweep, f"trainer.label_smoothing={v}") for v in ("1.5", "0.0"))
    assert (fine / "metrics.json").exists(), "the job after the failed one did not run"
    assert not (failed / "metrics.json").exists()
    failure = json.loads((failed / FAILURE_FILE).read_text())
    message = "trainer.label_smoothing must be in [0.0, 1.0], got 1.5"
    assert failure["error"] == f"ConfigError: {message}"
    assert failure["logs"][0] == str(failed / LOG)
    assert message in (failed / LOG).read_text()
    assert "1 job(s) of this sweep failed" in output
    assert all(log in output for log in failure["logs"])
    assert "Traceback" not in output  # a config error is one line, not a stack trace
    return failure


def test_failed_job_is_reported_with_its_log_and_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    result = multirun(*FAILING, sweep=sweep)
    failure = check_failed_sweep(result, sweep)
    assert len(failure["logs"]) == 1  # no submitit logs with the plain launcher


# Two presets in a nested group (tiny/a, tiny/b) that set their own `name`, like paper/*.
PRESET = """\
# @package _global_
defaults:
  - /experiment/quickstart
  - _self_
name: tiny_{}
"""


@pytest.fixture
def tiny_presets(tmp_path: Path) -> str:
    """The override that lets Hydra find the two presets."""
    folder = tmp_path / "conf" / "experiment" / "tiny"
    folder.mkdir(parents=True)
    for preset in ("a", "b"):
        (folder / f"{preset}.yaml").write_text(PRESET.format(preset))
    return f"hydra.searchpath=[file://{tmp_path / 'conf'}]"


def preset_sweep(tmp_path: Path, presets: str) -> tuple[subprocess.CompletedProcess, dict]:
    """`-m experiment=tiny/a,tiny/b trainer.label_smoothing=1.5,0.0`: 2 of 4 jobs fail. The sweep
    folder interpolates ${name}, which each preset sets: the jobs must still stay together in
    the launching command's folder (name=sweep). Returns the result and the jobs' folders."""
    shrunk = [o for o in FAILING if not o.startswith("experiment=")]  # the presets extend it
    result = multirun(
        presets, "experiment=tiny/a,tiny/b", *shrunk, sweep=tmp_path / "s" / "${name}"
    )
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["sweep"]
    jobs = {
        (preset, value): job_dir(
            tmp_path / "s" / "sweep",
            f"experiment=tiny_{preset}",
            f"trainer.label_smoothing={value}",
        )
        for preset in ("a", "b")
        for value in ("1.5", "0.0")
    }
    return result, jobs


def test_sweep_over_presets_gives_every_job_its_folder_and_counts_every_failure(
    tmp_path, tiny_presets
):
    result, jobs = preset_sweep(tmp_path, tiny_presets)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert len(set(jobs.values())) == 4 and all("/" not in p.name for p in jobs.values())
    for (_, value), run in jobs.items():
        assert (run / FAILURE_FILE).exists() == (value == "1.5"), run
        assert (run / "metrics.json").exists() == (value == "0.0"), run
    assert json.loads((jobs["b", "0.0"] / "config.json").read_text())["name"] == "tiny_b"
    assert "2 job(s) of this sweep failed" in output
    assert all(str(jobs[p, "1.5"] / LOG) in output for p in ("a", "b"))


@pytest.mark.slow  # two `advflat -m` runs of 4 jobs
def test_relaunched_sweep_over_presets_skips_each_presets_finished_job(tmp_path, tiny_presets):
    preset_sweep(tmp_path, tiny_presets)
    second, jobs = preset_sweep(tmp_path, tiny_presets)
    assert (
        second.returncode == 1 and "2 job(s) of this sweep failed" in second.stdout + second.stderr
    )
    for preset in ("a", "b"):
        log_text = (jobs[preset, "0.0"] / LOG).read_text()
        assert "already finished with this config: skipped" in log_text


@pytest.mark.slow
def test_failed_job_under_submitit_is_reported_with_submitits_logs(tmp_path):
    sweep = tmp_path / "sweep"
    result = multirun(*FAILING, "cluster=local", sweep=sweep)
    failure = check_failed_sweep(result, sweep)
    submitit_logs = [Path(p) for p in failure["logs"][1:]]
    assert [p.suffix for p in submitit_logs] == [".err", ".out"]
    assert all(p.is_relative_to(sweep / ".submitit") and p.exists() for p in submitit_logs)
