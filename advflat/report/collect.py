"""Find runs under a directory: every folder with a metrics.json is one run.

A run carries what the report needs and nothing it must recompute: the final evaluation
(metrics.json, updated by a later ``advflat-eval`` of checkpoints/final.pt), the per-epoch
training log (history.json), the evaluations of its snapshots (checkpoints/epoch_XXX.json), its
command-line overrides (.hydra/overrides.yaml) and its composed config (config.json).

A ``null`` value (how advflat writes a NaN or infinite metric: strict JSON has neither) is read
back as NaN, so the report's arithmetic treats it as the missing number it is.

The overrides are labels only (which swept value a run had, for the table's rows): nothing is
configured or built from them, and a file that is not a list of ``key=value`` lines is ignored.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from advflat.report.names import current_names
from advflat.snapshot_results import latest_result
from advflat.snapshot_results import snapshot_results as snapshot_metrics

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


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def snapshot_results(path: Path) -> dict[int, dict[str, float]]:
    """``advflat-eval --all`` results of the snapshots, by epoch (epoch_005.eval-….json → 5);
    runs evaluated before results were named by config have ``epoch_005.json``."""
    older = {}
    for file in (path / "checkpoints").glob("epoch_[0-9][0-9][0-9].json"):
        older[int(file.stem.removeprefix("epoch_"))] = json.loads(file.read_text())
    found = {**older, **snapshot_metrics(path / "checkpoints")}
    return {epoch: with_nan(values) for epoch, values in found.items()}


def training_history(path: Path) -> dict[int, dict[str, float]]:
    history = read_json(path / "history.json")
    return {int(epoch): with_nan(current_names(values)) for epoch, values in history.items()}


def override_labels(path: Path) -> list[str]:
    """The run's command-line overrides as label lines (none when absent or not a list)."""
    overrides_file = path / ".hydra" / "overrides.yaml"
    lines = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
    return [line for line in lines if isinstance(line, str)] if isinstance(lines, list) else []


def load_run(metrics_file: Path) -> Run:
    path = metrics_file.parent
    # A later evaluation of the final model (advflat-eval RUN) adds to or replaces training's.
    metrics = with_nan(
        {
            **json.loads(metrics_file.read_text()),
            **(latest_result(path / "checkpoints" / "final.pt") or {}),
        }
    )
    return Run(
        path,
        parse_overrides(override_labels(path)),
        metrics,
        read_json(path / "config.json"),
        training_history(path),
        snapshot_results(path),
    )


def collect(root: Path | str) -> list[Run]:
    """Every run below ``root`` (sorted by path), skipping unreadable metrics files."""
    runs = []
    for metrics_file in sorted(Path(root).rglob("metrics.json")):
        try:
            runs.append(load_run(metrics_file))
        except (json.JSONDecodeError, yaml.YAMLError, OSError, ValueError):
            continue  # a run still writing is skipped rather than crashing the report
    return runs
