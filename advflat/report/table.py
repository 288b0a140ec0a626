"""One row per setting (overrides without the seed): metrics as mean ± std over seeds."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

from advflat.report.collect import Run


def aggregate(runs: list[Run], metrics: list[str]) -> list[dict[str, object]]:
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.setting, []).append(run)
    rows = []
    for setting, members in sorted(groups.items()):
        row: dict[str, object] = dict(setting)
        row["seeds"] = len(members)
        for metric in metrics:
            values = [r.metrics[metric] for r in members if metric in r.metrics]
            row[metric] = statistics.fmean(values) if values else float("nan")
            row[f"{metric} std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def columns(runs: list[Run], metrics: list[str]) -> list[str]:
    keys = sorted({k for run in runs for k, _ in run.setting})
    return keys + ["seeds"] + [c for m in metrics for c in (m, f"{m} std")]


def write_csv(path: Path, rows: list[dict[str, object]], header: list[str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def markdown(rows: list[dict[str, object]], runs: list[Run], metrics: list[str]) -> str:
    keys = sorted({k for run in runs for k, _ in run.setting})
    header = keys + ["seeds"] + metrics
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row.get(k, "")) for k in keys] + [str(row["seeds"])]
        cells += [_mean_std(row[m], row[f"{m} std"], m) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _mean_std(mean: object, std: object, metric: str) -> str:
    scale, unit = (100.0, " %") if "_error" in metric else (1.0, "")
    return f"{float(mean) * scale:.2f} ± {float(std) * scale:.2f}{unit}"
