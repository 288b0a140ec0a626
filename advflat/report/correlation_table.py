"""``correlations.md`` of a study repeated over seeds: for every flatness measure against test
robust loss and against the robust generalization gap, one row per seed (over the models trained
with that seed) and one pooled over every run of every seed."""

from __future__ import annotations

from typing import Any

from advflat.report.families import Model
from advflat.report.names import FLATNESS, TARGETS
from advflat.report.study import SNAPSHOT_TITLES

PREAMBLE = (
    "Pearson r and Spearman ρ with 95 % bootstrap intervals over the models; p is Pearson's test "
    "of r = 0. A seed's row is over the models (family and hyper-parameters) trained with that "
    "seed; `pooled` is over every run of every seed, each method counted once per seed. "
    "– : fewer than 3 models, or a constant axis. Collapsed runs are left out."
)
HEADER = ("| seed | n | Pearson r [95 % CI] | Spearman ρ [95 % CI] | p |", "|---|---|---|---|---|")


def with_interval(value: float, interval: list[float] | tuple[float, float]) -> str:
    low, high = interval
    return f"{value:.2f} [{low:.2f}, {high:.2f}]"


def table_row(label: str, fit: dict[str, Any]) -> str:
    """``fit``: a correlations.json entry, or a ``per_seed`` item (no coefficients: none)."""
    if "pearson" not in fit:
        return f"| {label} | {fit['n']} | – | – | – |"
    pearson = with_interval(fit["pearson"], fit["pearson_ci"])
    spearman = with_interval(fit["spearman"], fit["spearman_ci"])
    return f"| {label} | {fit['n']} | {pearson} | {spearman} | {fit['p_value']:.2g} |"


def pair_section(entry: dict[str, Any]) -> list[str]:
    title = (
        f"### {FLATNESS[entry['x']]} vs {TARGETS[entry['y']]}, {SNAPSHOT_TITLES[entry['snapshot']]}"
    )
    rows = [table_row(seed["seed"], seed) for seed in entry.get("per_seed", [])]
    plot = f"correlations/{entry['plot']}"
    return [title, "", *HEADER, *rows, table_row("pooled", entry), "", f"Plot: [{plot}]({plot})"]


def correlations_markdown(entries: list[dict[str, Any]], models: list[Model]) -> str:
    lines = ["# Correlations per seed and pooled", "", PREAMBLE, ""]
    left_out = [m for m in models if m.collapsed]
    if left_out:
        lines += ["Left out (collapsed):", ""]
        lines += [f"- {m.setting.label}, seed {m.run.seed}: {m.collapsed}" for m in left_out]
        lines.append("")
    if not entries:
        lines += ["No correlation could be computed; table.md's notes say why.", ""]
    for entry in entries:
        lines += [*pair_section(entry), ""]
    return "\n".join(lines)
