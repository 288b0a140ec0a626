"""Find runs under a directory: every folder with a metrics.json is one run.

A run is described by its Hydra overrides (``.hydra/overrides.yaml``), so a sweep's table has one
column per swept key; runs that differ only in ``seed`` are the repetitions of one setting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

IGNORED_OVERRIDES = ("hydra.", "cluster=", "hydra/")


@dataclass
class Run:
    path: Path
    overrides: dict[str, str]
    metrics: dict[str, float]
    epochs: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def seed(self) -> str:
        return self.overrides.get("seed", "0")

    @property
    def setting(self) -> tuple[tuple[str, str], ...]:
        """The overrides without the seed: runs with equal settings are averaged."""
        return tuple(sorted((k, v) for k, v in self.overrides.items() if k != "seed"))


def parse_overrides(lines: list[str]) -> dict[str, str]:
    pairs = {}
    for line in lines:
        if "=" not in line or line.startswith(IGNORED_OVERRIDES):
            continue
        key, value = line.split("=", 1)
        pairs[key.lstrip("+~")] = value
    return pairs


def epoch_metrics(path: Path) -> dict[int, dict[str, float]]:
    """Per-epoch metrics: the training log (history.json) merged with what `advflat-eval`
    wrote beside the snapshots (checkpoints/epoch_XXX.json)."""
    history = path / "history.json"
    epochs = (
        {int(e): m for e, m in json.loads(history.read_text()).items()} if history.exists() else {}
    )
    for file in sorted((path / "checkpoints").glob("epoch_*.json")):
        epoch = int(file.stem.split("_")[1])
        epochs.setdefault(epoch, {}).update(json.loads(file.read_text()))
    return epochs


def load_run(metrics_file: Path) -> Run:
    path = metrics_file.parent
    overrides_file = path / ".hydra" / "overrides.yaml"
    lines = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
    metrics = json.loads(metrics_file.read_text())
    return Run(path, parse_overrides(lines or []), metrics, epoch_metrics(path))


def collect(root: Path | str) -> list[Run]:
    """Every run below ``root`` (sorted by path), skipping unreadable metrics files."""
    runs = []
    for metrics_file in sorted(Path(root).rglob("metrics.json")):
        try:
            runs.append(load_run(metrics_file))
        except (json.JSONDecodeError, yaml.YAMLError, OSError):
            continue  # a run still writing is skipped rather than crashing the report
    return runs
