"""``advflat resume=RUN``: continue a run with the config it started with.

The config is the run's own stored, resolved one (inside ``checkpoints/last.pt``, else
``config.json``), checked like every stored config (only advflat's own ``_target_``s, and no
value that would choose where to write), so resuming needs neither the original command line
nor Hydra: the run folder is all there is to name. Training then finds ``last.pt`` and goes on
from its epoch; a finished run is skipped as usual.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from advflat.cli.run_folder import stored_run_config
from advflat.core.errors import ConfigError
from advflat.core.loading import check_stored_config, without_stored_writes

RESUME = "resume="
# Hydra's default line format, so a resumed run's log reads like the part before it.
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def resume_folder(args: list[str]) -> Path | None:
    """The folder ``resume=RUN`` names (None when the command does not resume)."""
    named = [arg for arg in args if arg.startswith(RESUME)]
    if not named:
        return None
    if len(args) != 1:
        raise ConfigError(
            "resume=RUN takes no other arguments: a run resumes with the config it started "
            f"with (got {' '.join(args)})"
        )
    value = named[0].removeprefix(RESUME).strip("'\"")
    if not value:
        raise ConfigError("resume= needs a run folder: advflat resume=outputs/runs/DATE/TIME")
    return Path(value)


def resumed_config(run_dir: Path) -> DictConfig:
    """The checked, stored config of the run in ``run_dir``."""
    if not run_dir.is_dir():
        raise ConfigError(f"resume={run_dir}: no such folder")
    stored, source = stored_run_config(run_dir)
    if stored is None:
        raise ConfigError(
            f"resume={run_dir}: nothing to resume there (neither checkpoints/last.pt nor "
            "config.json holds a run config)"
        )
    where = str(run_dir / source)
    check_stored_config(stored, where)
    return OmegaConf.create(without_stored_writes(stored, where))


def log_to(run_dir: Path) -> None:
    """Log as a Hydra run does: to the terminal and appended to ``RUN/train.log``."""
    handlers: list[logging.Handler] = [
        logging.StreamHandler(sys.stderr),
        logging.FileHandler(run_dir / "train.log", mode="a"),
    ]
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, handlers=handlers, force=True)
