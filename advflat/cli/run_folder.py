"""What ``advflat`` checks about a run folder before Hydra writes into it, and tidies after.

Hydra writes ``.hydra/`` (config.yaml, hydra.yaml, overrides.yaml) and opens the log in the run
folder before advflat's code runs. So a command that names an existing folder
(``hydra.run.dir=RUN``) is checked first: the folder is locked for this process (another holder
is refused, named by its PID), and a folder whose run has another config (its config.json, or
checkpoints/last.pt while it trains) is refused. Either refusal leaves the folder untouched.
Commands without a literal ``hydra.run.dir`` get a new, timestamped folder and need no check;
multiruns (``-m``) and Hydra's own options (``--cfg``, ``--help``, ...) are Hydra's business.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from advflat.cli.paths import CONFIG_DIR, CONFIG_NAME
from advflat.core.config import to_container
from advflat.core.errors import ConfigError
from advflat.core.loading import load_torch
from advflat.core.schema import read_json
from advflat.runs.run_lock import LOCK_FILE, hold, release

RUN_DIR = "hydra.run.dir="
# What a run folder holds before training writes anything: a rejected command's leftovers.
HYDRA_ONLY = {".hydra", LOCK_FILE}
_existing: set[Path] = set()


def literal_run_dir(args: list[str]) -> Path | None:
    """The folder ``hydra.run.dir=...`` names, when the command is a plain single run."""
    if any(arg.startswith("-") for arg in args):
        return None
    for arg in args:
        if arg.startswith(RUN_DIR):
            value = arg.removeprefix(RUN_DIR).strip("'\"")
            return None if "${" in value or not value else Path(value)
    return None


def check_before_hydra(args: list[str]) -> None:
    """Lock the existing run folder ``args`` names and refuse one of another config."""
    run_dir = literal_run_dir(args)
    if run_dir is None or not run_dir.is_dir():
        return
    _existing.add(run_dir.absolute())
    # Read-only checks first: a refused command must not even create the lock file.
    stored, source = stored_run_config(run_dir)
    current = None if stored is None else composed_config(args)
    if stored is not None and current is not None and plain(stored) != plain(current):
        keys = ", ".join(differing_keys(plain(stored), plain(current))[:3])
        raise ConfigError(
            f"{run_dir} holds a run with another config ({source}; differs in {keys}): re-run "
            "it with its own overrides, or choose another hydra.run.dir; nothing in it was changed"
        )
    hold(run_dir, "training")


def existed_before_hydra(run_dir: Path) -> bool:
    """Whether ``run_dir`` was there before this command (False: Hydra created it)."""
    return Path(run_dir).absolute() in _existing


def stored_run_config(run_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """The config of the run in ``run_dir`` (config.json, else last.pt's) and where it is."""
    config_file, last = run_dir / "config.json", run_dir / "checkpoints" / "last.pt"
    try:
        if config_file.is_file():
            config = read_json(config_file)
            return (config if isinstance(config, dict) else None), "config.json"
        if last.is_file():
            state = load_torch(last, "checkpoint")
            config = state.get("config") if isinstance(state, dict) else None
            return (config if isinstance(config, dict) else None), "checkpoints/last.pt"
    except (ConfigError, ValueError, OSError):
        pass  # unreadable: training itself reports it, in its own words
    return None, ""


def composed_config(args: list[str]) -> dict[str, Any] | None:
    """The task config Hydra will compose from ``args`` (None when it does not compose: Hydra
    then reports the error itself, before writing anything)."""
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return to_container(compose(CONFIG_NAME, overrides=args))
    except (HydraException, OmegaConfBaseException, ValueError):
        return None


def differing_keys(stored: Any, current: Any, key: str = "") -> list[str]:
    """The dotted keys where two plain configs differ (a whole node when its type differs)."""
    if isinstance(stored, dict) and isinstance(current, dict):
        found: list[str] = []
        for name in sorted(set(stored) | set(current), key=str):
            path = f"{key}.{name}" if key else str(name)
            found += differing_keys(stored.get(name), current.get(name), path)
        return found
    return [] if stored == current else [key or "the config"]


def plain(config: Any) -> Any:
    """``config`` as it reads back from its JSON file (tuples as lists, keys as strings)."""
    return json.loads(json.dumps(config))


def remove_if_empty(run_dir: Path) -> None:
    """Remove a folder this command created that holds only Hydra's files (and the log)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    leftovers = {entry.name for entry in run_dir.iterdir() if entry.suffix != ".log"}
    if not leftovers <= HYDRA_ONLY:
        return
    try:
        hold(run_dir, "cleanup")  # another command that started in it meanwhile keeps it
    except ConfigError:
        return
    try:
        _close_logs_in(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        release(run_dir)


def _close_logs_in(run_dir: Path) -> None:
    for handler in logging.getLogger().handlers[:]:
        name = getattr(handler, "baseFilename", None)
        if name is not None and Path(name).absolute().is_relative_to(run_dir.absolute()):
            handler.close()
            logging.getLogger().removeHandler(handler)


def last_epoch(run_dir: Path) -> int:
    """The last epoch saved in ``run_dir/checkpoints/last.pt`` (0 before the first one)."""
    try:
        state = load_torch(Path(run_dir) / "checkpoints" / "last.pt", "checkpoint")
    except ConfigError:
        return 0
    epoch = state.get("epoch", 0) if isinstance(state, dict) else 0
    # Only a line of text is made of it: a malformed epoch must not end the run in a traceback.
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else 0


def interrupted_line(run_dir: Path, overrides: list[str]) -> str:
    """The one line an interrupted run ends with: how far it got and the commands that resume
    it (the short form and, for a Hydra command line, that line in the run's folder)."""
    short = shlex.join(["advflat", f"resume={run_dir}"])
    head = f"interrupted after epoch {last_epoch(run_dir)}; resume with: {short}"
    if overrides == [f"resume={run_dir}"]:
        return head
    return f"{head} (or: {shlex.join(['advflat', *overrides, f'{RUN_DIR}{run_dir}'])})"


# Unfinished runs looked at for a twin of a new run (the newest first): enough for any session.
RECENT_RUNS = 20


def unfinished_twins(run_dir: Path, config: dict[str, Any]) -> list[Path]:
    """Unfinished runs beside ``run_dir`` (in the same ``RUNS/DATE/TIME`` tree) whose stored
    config is ``config``: what a new folder for a repeated command would not resume."""
    run_dir = Path(run_dir).absolute()
    started = sorted(run_dir.parent.parent.glob("*/*/checkpoints/last.pt"), reverse=True)
    twins = []
    for last in started[:RECENT_RUNS]:
        other = last.parent.parent
        if other == run_dir or (other / "metrics.json").exists():
            continue
        stored, _ = stored_run_config(other)
        if stored is not None and plain(stored) == plain(config):
            twins.append(other)
    return twins
