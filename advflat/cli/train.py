"""The advflat command: ``advflat [group=option ...] [key=value ...]`` (Hydra).

Composes advflat/conf/config.yaml, builds every object from its ``_target_`` and runs the
experiment in Hydra's output directory (Hydra never changes the working directory here).
Returns the sweep metric (``sweep_metric``), so Hydra sweepers can optimise it.

In a multirun (``advflat -m ...``) a job that fails is recorded and the sweep goes on; the
``cluster=`` presets' callback names the failed jobs and their logs at the end
(advflat/failed_jobs.py).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from advflat.cli.paths import CONFIG_DIR, CONFIG_NAME
from advflat.errors import ConfigError
from advflat.failed_jobs import forget_failure, record_failure
from advflat.pipeline import run_experiment
from advflat.sweep_folders import register_resolver

log = logging.getLogger("advflat")
register_resolver()  # before Hydra names the job folders (${advflat.job_folder:...})


def run_alone(cfg: DictConfig, out_dir: Path) -> float:
    try:
        metrics = run_experiment(cfg, out_dir)
    except ConfigError as error:
        # A bad option is the user's to fix: one line, no traceback.
        log.error("%s", error)
        sys.exit(2)
    return float(metrics.get(cfg.sweep_metric, float("nan")))


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
    return float(metrics.get(cfg.sweep_metric, float("nan")))


@hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base="1.3")
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return run_in_sweep(cfg, out_dir, hydra_cfg.job.override_dirname)
    return run_alone(cfg, out_dir)


if __name__ == "__main__":
    main()
