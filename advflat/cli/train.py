"""The advflat command: ``advflat [group=option ...] [key=value ...]`` (Hydra).

Composes advflat/conf/config.yaml, builds every object from its ``_target_`` and runs the
experiment in Hydra's output directory (Hydra never changes the working directory here).
Returns the sweep metric (``sweep_metric``), so Hydra sweepers can optimise it.

In a multirun (``advflat -m ...``) a job that fails is recorded and the sweep goes on; the
``cluster=`` presets' callback names the failed jobs and their logs at the end
(advflat/runs/failed_jobs.py).

A single run refuses to start in a folder that another process is using (``advflat.runs.run_lock``)
or that holds a run of another config, before Hydra writes anything there
(``advflat.cli.run_folder``). A rejected command leaves no folder of its own behind; Ctrl-C or
SIGTERM ends with one line saying how to resume (exit status 130 or 143): ``advflat resume=RUN``
continues a run with its own stored config (``advflat.cli.resume``; a run of a model class of
the user's own: ``advflat resume=RUN --model MODULE:CLASS``).
"""

from __future__ import annotations

import logging
import math
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from advflat.cli.paths import CONFIG_DIR, CONFIG_NAME
from advflat.cli.resume import log_to, resume_folder, resumed_config, split_model_flag
from advflat.cli.run_folder import (
    check_before_hydra,
    existed_before_hydra,
    interrupted_line,
    remove_if_empty,
    unfinished_twins,
)
from advflat.cli.unknown_keys import check_keys
from advflat.core.config import to_container
from advflat.core.errors import ConfigError
from advflat.core.io import disk_error
from advflat.models.registry import trusted_class
from advflat.runs.failed_jobs import forget_failure, record_failure
from advflat.runs.pipeline import run_experiment
from advflat.runs.sweep_folders import register_resolver

log = logging.getLogger("advflat")
register_resolver()  # before Hydra names the job folders (${advflat.job_folder:...})
SIGINT_STATUS, SIGTERM_STATUS = 128 + signal.SIGINT, 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is, like Ctrl-C, so that both stop the same way."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def sweep_value(metrics: dict[str, Any], key: str) -> float:
    """The value Hydra sweepers optimise; NaN when missing or not finite (written as null)."""
    value = metrics.get(key)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else math.nan


def run_alone(cfg: DictConfig, out_dir: Path, command: list[str], new_folder: bool) -> float:
    """One run in ``out_dir``; ``command`` (its overrides) goes into the interrupted line."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        metrics = run_experiment(cfg, out_dir)
    except KeyboardInterrupt as stop:
        log.error("%s", interrupted_line(out_dir, command))
        sys.exit(SIGTERM_STATUS if isinstance(stop, Terminated) else SIGINT_STATUS)
    except ConfigError as error:
        # A bad option (or a full disk) is the user's to fix: one line, no traceback.
        log.error("%s", error)
        if new_folder:
            remove_if_empty(out_dir)
        sys.exit(2)
    except OSError as error:
        found = disk_error(Path(error.filename or out_dir), error)
        if found is None:
            raise
        log.error("%s", found)
        sys.exit(1)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return sweep_value(metrics, cfg.sweep_metric)


def run_in_sweep(cfg: DictConfig, out_dir: Path, overrides: str) -> float:
    """One job of a multirun: its failure is recorded, not raised, so the others go on.

    Only Exceptions are caught: submitit's preemption exit (SystemExit) and Ctrl-C pass.
    """
    forget_failure(out_dir)
    try:
        metrics = run_experiment(cfg, out_dir)
    except Exception as error:
        record_failure(out_dir, overrides, error)
        return float("nan")
    return sweep_value(metrics, cfg.sweep_metric)


@hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base="1.3")
def hydra_main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return run_in_sweep(cfg, out_dir, hydra_cfg.job.override_dirname)
    new_folder = not existed_before_hydra(out_dir)
    if new_folder:
        for twin in unfinished_twins(out_dir, to_container(cfg)):
            log.warning(
                "starting a new run in %s; %s holds an unfinished run of this config: to "
                "continue it instead, stop this one and run: advflat resume=%s",
                out_dir,
                twin,
                twin,
            )
    return run_alone(cfg, out_dir, list(hydra_cfg.overrides.task), new_folder)


def resume(run_dir: Path, model_spec: str | None = None) -> None:
    """``advflat resume=RUN [--model MODULE:CLASS]``: the run's stored config, trained on from
    its last epoch (``model_spec``: the user's own model class the run may name)."""
    trusted = None if model_spec is None else trusted_class(model_spec)
    cfg = resumed_config(run_dir, trusted)
    log_to(run_dir)
    log.info("resuming %s with its stored config", run_dir)
    run_alone(cfg, run_dir, [f"resume={run_dir}"], new_folder=False)


def main() -> None:
    """``advflat``: refuse an unknown key, or an occupied or conflicting run folder, then hand
    over to Hydra."""
    try:
        run_dir = resume_folder(sys.argv[1:])
        if run_dir is not None:
            resume(run_dir, split_model_flag(sys.argv[1:])[1])
            return
        check_keys(sys.argv[1:])
        check_before_hydra(sys.argv[1:])
    except ConfigError as error:
        print(f"advflat: {error}", file=sys.stderr)
        sys.exit(2)
    hydra_main()


if __name__ == "__main__":
    main()
