"""The correlations of a study: every flatness measure against test robust loss and against the
robust generalization gap, across the models that trained, at the final model and at each run's
best-test-robust-loss snapshot; one entry and one scatter plot per pair, or a one-line reason.

The entry's coefficients pool every run of every seed; when a method was trained with several
seeds, ``per_seed`` adds one correlation per seed, over the models of that seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from advflat.report.collect import Run
from advflat.report.correlation import MIN_MODELS, correlate
from advflat.report.families import TRAINED, Model, epsilon, source, xi
from advflat.report.names import FLATNESS, TARGETS, TEST_ROBUST_LOSS, flatness_label
from advflat.report.plots import epsilon_text
from advflat.report.scatter import Axes, Point, scatter_plot
from advflat.report.seed_repeats import per_seed, several_seeds
from advflat.report.snapshots import SNAPSHOTS

REQUIRED_FLATNESS = ("flatness/average/robust", "flatness/worst/robust")
HOW_TO_EVALUATE = "evaluate with evaluation=paper, or advflat-eval DIR --all"
SNAPSHOT_TITLES = {
    "final": "final models",
    "best_test_robust_loss": "best-test-robust-loss snapshot of every run",
}


@dataclass
class Outcome:
    entries: list[dict[str, Any]]
    messages: list[str]


def common(values: set[float | None], show: Callable[[float], str]) -> str:
    known = {v for v in values if v is not None}
    return show(known.pop()) if len(known) == 1 else "mixed"


def axes_text(models: list[Model], x: str, y: str, snapshot: str) -> Axes:
    radius = {xi(m.run, x) for m in models}
    xi_value = next(iter(radius)) if len(radius) == 1 else None
    eps = common({epsilon(m.run) for m in models}, lambda e: epsilon_text(e).split(" = ")[1])
    y_label = f"{TARGETS[y]}\nrobust loss under PGD at ε = {eps}"
    title = f"{TARGETS[y].split(' (')[0]} vs {FLATNESS[x]} — {SNAPSHOT_TITLES[snapshot]}"
    return Axes(flatness_label(x, xi_value), y_label, title)


def pair(models: list[Model], x: str, y: str, snapshot: str, out: Path) -> Outcome:
    """The pooled correlation over every model; with several seeds also one per seed."""
    pick = SNAPSHOTS[snapshot]
    points = []
    for model in models:
        metrics = pick(model.run) or {}
        if x in metrics and y in metrics:
            points.append(Point(metrics[x], metrics[y], model.setting, model.run.seed))
    name = f"{x} vs {y} ({snapshot})"
    if len(points) < MIN_MODELS:
        reason = f"only {len(points)} model(s) have both" if points else "no model has both"
        return Outcome([], [f"no correlation for {name}: {reason}, need ≥ {MIN_MODELS}"])
    fit = correlate([p.x for p in points], [p.y for p in points])
    if fit is None:
        return Outcome([], [f"no correlation for {name}: the values are constant"])
    seeds = per_seed(points) if several_seeds(models) else []
    path = out / f"{snapshot}_{x.replace('/', '_')}_vs_{y.replace('/', '_')}.png"
    scatter_plot(points, fit, seeds, axes_text(models, x, y, snapshot), path)
    entry = {"x": x, "y": y, "snapshot": snapshot, "plot": path.name, **asdict(fit)}
    if seeds:
        entry["per_seed"] = [seed.as_entry() for seed in seeds]
    return Outcome([entry], [])


def missing_flatness(runs: list[Run]) -> tuple[list[str], list[str]]:
    """The flatness measures to correlate, and a line for each required one nobody has."""
    has = {
        key for run in runs for metrics in (run.metrics, *run.snapshots.values()) for key in metrics
    }
    messages = [
        f"no correlation plots for {key}: none of the {len(runs)} runs has {key} "
        f"({HOW_TO_EVALUATE})"
        for key in REQUIRED_FLATNESS
        if key not in has
    ]
    return [key for key in FLATNESS if key in has], messages


def snapshots_to_use(runs: list[Run]) -> tuple[list[str], list[str]]:
    if any(TEST_ROBUST_LOSS in m for run in runs for m in run.snapshots.values()):
        return list(SNAPSHOTS), []
    if all(source(run) != TRAINED for run in runs):
        return ["final"], []  # external evaluations only: there are no snapshots to evaluate
    return ["final"], [
        "no best-snapshot correlations: no run has evaluated snapshots with "
        f"{TEST_ROBUST_LOSS} (advflat-eval RUN --all)"
    ]


def correlations(models: list[Model], out: Path) -> Outcome:
    runs = [m.run for m in models]
    measures, messages = missing_flatness(runs)
    snapshots, more = snapshots_to_use(runs)
    outcome = Outcome([], messages + more)
    for snapshot in snapshots:
        for x in measures:
            for y in TARGETS:
                found = pair(models, x, y, snapshot, out)
                outcome.entries += found.entries
                outcome.messages += found.messages
    return outcome
