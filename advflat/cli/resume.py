"""``advflat resume=RUN``: continue a run with the config it started with.

The config is the run's own stored, resolved one (inside ``checkpoints/last.pt``, else
``config.json``), checked like every stored config (only advflat's own ``_target_``s, and no
value that would choose where to write), so resuming needs neither the original command line
nor Hydra: the run folder is all there is to name. Training then finds ``last.pt`` and goes on
from its epoch; a finished run is skipped as usual.

A run of a model class of the user's own resumes only when the command names that class
(``advflat resume=RUN --model MODULE:CLASS``): the class stored in the run folder is never
imported on the file's word.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from torch import nn

from advflat.cli.run_folder import stored_run_config
from advflat.core.errors import ConfigError
from advflat.core.loading import check_stored_config, without_stored_writes
from advflat.models.registry import class_name

RESUME = "resume="
MODEL_FLAG = "--model"
# Hydra's default line format, so a resumed run's log reads like the part before it.
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def resume_folder(args: list[str]) -> Path | None:
    """The folder ``resume=RUN`` names (None when the command does not resume)."""
    named = [arg for arg in args if arg.startswith(RESUME)]
    if not named:
        return None
    rest, _ = split_model_flag(args)
    if len(rest) != 1:
        raise ConfigError(
            "resume=RUN takes no other arguments than --model MODULE:CLASS: a run resumes with "
            f"the config it started with (got {' '.join(args)})"
        )
    value = named[0].removeprefix(RESUME).strip("'\"")
    if not value:
        raise ConfigError("resume= needs a run folder: advflat resume=outputs/runs/DATE/TIME")
    return Path(value)


def split_model_flag(args: list[str]) -> tuple[list[str], str | None]:
    """``args`` without ``--model SPEC`` (or ``--model=SPEC``), and SPEC (None without it)."""
    rest, spec = [], None
    values = iter(args)
    for arg in values:
        if arg == MODEL_FLAG:
            spec = next(values, "")
        elif arg.startswith(f"{MODEL_FLAG}="):
            spec = arg.removeprefix(f"{MODEL_FLAG}=")
        else:
            rest.append(arg)
            continue
        if not spec or spec.startswith("-"):
            raise ConfigError(f"{MODEL_FLAG} needs a model class: {MODEL_FLAG} MODULE:CLASS")
    return rest, spec


def resumed_config(run_dir: Path, trusted: type[nn.Module] | None = None) -> DictConfig:
    """The checked, stored config of the run in ``run_dir``; its ``model._target_`` may name
    ``trusted``, the model class the command line names."""
    if not run_dir.is_dir():
        raise ConfigError(f"resume={run_dir}: no such folder")
    stored, source = stored_run_config(run_dir)
    if stored is None:
        raise ConfigError(
            f"resume={run_dir}: nothing to resume there (neither checkpoints/last.pt nor "
            "config.json holds a run config)"
        )
    where = str(run_dir / source)
    trusted_model = None if trusted is None else class_name(trusted)
    check_stored_config(stored, where, trusted_model=trusted_model)
    return OmegaConf.create(without_stored_writes(stored, where))


def log_to(run_dir: Path) -> None:
    """Log as a Hydra run does: to the terminal and appended to ``RUN/train.log``."""
    handlers: list[logging.Handler] = [
        logging.StreamHandler(sys.stderr),
        logging.FileHandler(run_dir / "train.log", mode="a"),
    ]
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, handlers=handlers, force=True)
