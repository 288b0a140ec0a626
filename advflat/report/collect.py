"""Find runs under a directory: every folder with a metrics.json is one run.

A run carries what the report needs and nothing it must recompute: the final evaluation
(metrics.json, updated by a later ``advflat-eval`` of checkpoints/final.pt), the per-epoch
training log (history.json), the evaluations of its snapshots
(checkpoints/epoch_XXX.eval-….json, named by ``advflat.evaluation.snapshot_results``), its
command-line overrides (.hydra/overrides.yaml) and its composed config (config.json).

A ``null`` value (how advflat writes a NaN or infinite metric: strict JSON has neither) is read
back as NaN, so the report's arithmetic treats it as the missing number it is.

The overrides are labels only (which swept value a run had, for the table's rows): nothing is
configured or built from them.

Every file is checked before it is used (``advflat.core.schema``: valid JSON, bounded size and
depth, the expected keys and kinds of values, ε and ξ not negative). A run whose metrics.json
fails is left out; any other file that fails is left out alone (the rest of its run stays);
either way one note says which file, which key and why, so nothing disappears from the report
unremarked."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from advflat.core.errors import ConfigError
from advflat.core.schema import (
    MAX_JSON_BYTES,
    fail,
    flat_metrics,
    join,
    mapping,
    number,
    optional_mapping,
    read_json,
    within_depth,
)
from advflat.evaluation.snapshot_results import result_files

log = logging.getLogger(__name__)
T = TypeVar("T")

IGNORED_OVERRIDES = ("hydra.", "cluster=", "hydra/", "device=", "name=")


@dataclass
class Run:
    path: Path
    overrides: dict[str, str]
    metrics: dict[str, float]
    config: dict[str, Any] = field(default_factory=dict)
    history: dict[int, dict[str, float]] = field(default_factory=dict)
    snapshots: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def seed(self) -> str:
        return self.overrides.get("seed", str(self.config.get("seed", 0)))

    @property
    def epochs(self) -> dict[int, dict[str, float]]:
        """Per-epoch metrics: the training log merged with the snapshots' evaluations."""
        merged = {epoch: dict(values) for epoch, values in self.history.items()}
        for epoch, values in self.snapshots.items():
            merged.setdefault(epoch, {}).update(values)
        return merged


def parse_overrides(lines: list[str]) -> dict[str, str]:
    pairs = {}
    for line in lines:
        if "=" not in line or line.startswith(IGNORED_OVERRIDES):
            continue
        key, value = line.split("=", 1)
        pairs[key.lstrip("+~")] = value
    return pairs


def with_nan(values: dict[str, Any]) -> dict[str, Any]:
    """Metrics with every null (a non-finite value, written as strict JSON) back as NaN."""
    return {key: math.nan if value is None else value for key, value in values.items()}


def read_metrics(path: Path) -> dict[str, float]:
    """A metrics file (metrics.json, an evaluation's ``….eval-<hash>.json``), checked."""
    return with_nan(flat_metrics(read_json(path), path))


def read_history(path: Path) -> dict[int, dict[str, float]]:
    """history.json: epoch (a whole number ≥ 0, as a string) → that epoch's metrics."""
    if not path.exists():
        return {}
    history = {}
    for epoch, values in mapping(read_json(path), path).items():
        if not epoch.isdigit():
            fail(path, epoch, "is not an epoch (a whole number)")
        history[int(epoch)] = with_nan(flat_metrics(values, path, epoch))
    return history


def read_config(path: Path) -> dict[str, Any]:
    """config.json, with the values the report reads checked: name, seed, the trainer's and the
    evaluation's nodes, ε and each metric's weight perturbation radius ξ."""
    if not path.exists():
        return {}
    config = mapping(read_json(path), path)
    if config.get("name") is not None and not isinstance(config["name"], str):
        fail(path, "name", "must be a string")
    if "seed" in config:
        number(config["seed"], path, "seed", integer=True)
    for node in ("trainer", "evaluation"):
        optional_mapping(config.get(node), path, node)
    evaluation = optional_mapping(config.get("evaluation"), path, "evaluation")
    if evaluation.get("epsilon") is not None:
        number(evaluation["epsilon"], path, "evaluation.epsilon", 0.0)
    metrics = optional_mapping(evaluation.get("metrics"), path, "evaluation.metrics")
    for name, node in metrics.items():
        key = join("evaluation.metrics", name)
        attack = optional_mapping(optional_mapping(node, path, key).get("weight_attack"), path,
                                  f"{key}.weight_attack")  # fmt: skip
        if attack.get("xi") is not None:
            number(attack["xi"], path, f"{key}.weight_attack.xi", 0.0)
    return config


def newest_result(checkpoint: Path, notes: list[str]) -> dict[str, float] | None:
    """The newest evaluation of ``checkpoint`` whose file passes its checks (each file that
    does not is noted and left out)."""
    for file in reversed(result_files(checkpoint)):
        metrics = _part(notes, file, read_metrics)
        if metrics is not None:
            return metrics
    return None


def snapshot_evaluations(path: Path, notes: list[str] | None = None) -> dict[int, dict[str, float]]:
    """The newest ``advflat-eval --all`` result of each snapshot of the run in ``path``, by
    epoch (``epoch_005.pt`` → 5)."""
    notes = [] if notes is None else notes
    found: dict[int, dict[str, float]] = {}
    for snapshot in sorted((path / "checkpoints").glob("epoch_*.pt")):
        epoch = snapshot.stem.removeprefix("epoch_")
        metrics = newest_result(snapshot, notes) if epoch.isdigit() else None
        if metrics is not None:
            found[int(epoch)] = metrics
    return found


def read_overrides(path: Path) -> list[str]:
    """The run's command-line overrides (.hydra/overrides.yaml) as label lines."""
    if not path.exists():
        return []
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            fail(path, "", f"is larger than {MAX_JSON_BYTES // 2**20} MiB")
        lines = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        fail(path, "", f"is not valid YAML ({first})")
    within_depth(lines, path)
    if not isinstance(lines, list):
        fail(path, "", "must be a list of key=value lines")
    for index, line in enumerate(lines):
        if not isinstance(line, str):
            fail(path, f"[{index}]", "must be a key=value line")
    return lines


def _part(notes: list[str], path: Path, reader: Callable[[Path], T]) -> T | None:
    """``reader(path)``; a file that fails its checks is one note and None (left out)."""
    try:
        return reader(path)
    except ConfigError as error:  # its message starts with the file's path
        notes.append(f"left out {error}")
    except OSError as error:
        notes.append(f"left out {path}: could not be read ({error.strerror})")
    return None


def load_run(metrics_file: Path, notes: list[str] | None = None) -> Run:
    """The run of ``metrics_file``; a file of it that fails its checks is left out, one line
    in ``notes`` each (logged as warnings without ``notes``). A metrics.json that fails is a
    ConfigError: without its results there is no run."""
    own: list[str] = []
    path = metrics_file.parent
    final = newest_result(path / "checkpoints" / "final.pt", own)
    run = Run(
        path,
        parse_overrides(_part(own, path / ".hydra" / "overrides.yaml", read_overrides) or []),
        # A later evaluation of the final model (advflat-eval RUN) adds to or replaces training's.
        {**read_metrics(metrics_file), **(final or {})},
        _part(own, path / "config.json", read_config) or {},
        _part(own, path / "history.json", read_history) or {},
        snapshot_evaluations(path, own),
    )
    if notes is None:
        for note in own:
            log.warning("%s", note)
    else:
        notes.extend(own)
    return run


def gather(root: Path | str) -> tuple[list[Run], list[str]]:
    """Every run below ``root`` (sorted by path) and the notes on what was left out and why:
    a run whose metrics.json fails its checks, or a single file of a run."""
    runs: list[Run] = []
    notes: list[str] = []
    for metrics_file in sorted(Path(root).rglob("metrics.json")):
        try:
            runs.append(load_run(metrics_file, notes))
        except (ConfigError, OSError) as error:
            notes.append(f"left out the run {metrics_file.parent}: {error}")
    return runs, notes


def collect(root: Path | str) -> list[Run]:
    """``gather``'s runs; its notes are logged as warnings."""
    runs, notes = gather(root)
    for note in notes:
        log.warning("%s", note)
    return runs
