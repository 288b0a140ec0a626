"""Failed jobs of a sweep: recorded where they ran, named together when the sweep ends.

Hydra's sweeper stops a sweep at the first job whose function raised (after the current batch),
and a ``sys.exit`` inside a job ends the plain launcher's whole process. So a sweep job catches
its own error instead: it logs the error to its log file, writes ``failure.json`` in its run
directory and returns NaN, and the other jobs go on. ``FailedJobsSummary``, a Hydra callback that
the ``cluster=`` presets install, then names every job of the sweep that failed, with its log
files, and ends the command with exit status 1.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from advflat.core.errors import ConfigError

log = logging.getLogger(__name__)

FAILURE_FILE = "failure.json"


@dataclass
class Failure:
    """What a user needs to find and fix a failed job."""

    overrides: str  # the job's override_dirname, e.g. "seed=1,trainer.label_smoothing=2.0"
    error: str  # "ValueError: ..." (one line)
    run_dir: str
    logs: list[str]  # the job's own log file, then submitit's stderr/stdout logs if any
    time: float  # when it failed (seconds since the epoch)


def log_files() -> list[str]:
    """The files this job's messages end up in: Hydra's job log and submitit's job logs."""
    files = [
        handler.baseFilename
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.FileHandler) and handler.baseFilename != os.devnull
    ]
    if os.environ.get("SUBMITIT_EXECUTOR"):  # inside a submitit job (local or SLURM)
        import submitit

        paths = submitit.JobEnvironment().paths
        files += [str(paths.stderr), str(paths.stdout)]
    return files


def one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def forget_failure(run_dir: Path) -> None:
    """A retried job starts clean: an earlier attempt's failure.json must not outlive it."""
    (run_dir / FAILURE_FILE).unlink(missing_ok=True)


def record_failure(run_dir: Path, overrides: str, error: BaseException) -> Failure:
    """Log the error (a traceback unless it is the user's config) and write failure.json."""
    from advflat.core.io import save_json  # imports torch: kept out of the launcher's callback

    failure = Failure(overrides, one_line(error), str(run_dir), log_files(), time.time())
    log.error(
        "job failed: %s\n  overrides: %s\n  run directory: %s\n  logs: %s",
        failure.error,
        overrides or "(none)",
        run_dir,
        ", ".join(failure.logs) or "(none)",
        exc_info=None if isinstance(error, ConfigError) else error,
    )
    save_json(run_dir / FAILURE_FILE, asdict(failure))
    return failure


def failures_since(sweep_dir: Path, start: float) -> list[Failure]:
    """The failures recorded below ``sweep_dir`` at or after ``start`` (this sweep's jobs)."""
    found = []
    for path in sorted(sweep_dir.rglob(FAILURE_FILE)):
        try:
            failure = Failure(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue  # not ours, or unreadable: the job's own log still has the error
        if failure.time >= start:
            found.append(failure)
    return found


def summary(failures: list[Failure]) -> str:
    lines = [f"{len(failures)} job(s) of this sweep failed:"]
    for failure in failures:
        lines.append(f"  - {failure.overrides or failure.run_dir}: {failure.error}")
        lines.extend(f"      log: {path}" for path in failure.logs)
    lines.append("Fix them and run the same command again: finished jobs are skipped.")
    return "\n".join(lines)


def pin_sweep_dir(config: DictConfig) -> None:
    """Every job of this multirun writes below the launching command's sweep folder.

    A job's config is composed anew from its own overrides, so a swept experiment preset that
    sets ``name`` would move its job to ``outputs/sweeps/<that name>``, where this summary (and
    the user) would not look. Replaying the resolved folder as a Hydra override, as if typed on
    the command line, keeps them together.
    """
    replayed = OmegaConf.select(config, "hydra.overrides.hydra")
    if replayed is None:
        return
    folder = str(config.hydra.sweep.dir).replace("'", "\\'")
    with read_write(config.hydra), open_dict(config.hydra):
        replayed.append(f"hydra.sweep.dir='{folder}'")


class FailedJobsSummary(Callback):
    """After a multirun: name the jobs that failed and exit with status 1.

    Runs in the launching process; the jobs (here, in subprocesses or on SLURM nodes) report
    through their failure.json files.
    """

    def __init__(self) -> None:
        self.start = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.start = time.time()
        pin_sweep_dir(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failures = failures_since(Path(config.hydra.sweep.dir), self.start)
        if failures:
            log.error("%s", summary(failures))
            # A hook cannot return a status; without this a failed sweep would exit 0.
            sys.exit(1)
