"""One row per method (family + hyper-parameters): the paper's metrics, mean ± std over seeds.

A single seed shows its value alone (no "± 0.00"); the ``seeds`` columns say how many there
were. Collapsed runs get rows of their own, marked, so they never blur a method's average.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass
from pathlib import Path

from advflat.report.families import Model, Setting
from advflat.report.names import TABLE, is_error

PREAMBLE = (
    "Errors in %; losses, the robust generalization gap (test − train robust loss) and flatness "
    "(increase of the robust loss under weight perturbations) in nats; mean ± std over seeds, "
    "`seeds` = how many. Collapsed runs (trained to chance level) have their own rows."
)


@dataclass
class Row:
    setting: Setting
    seeds: list[str]
    collapsed: str
    values: dict[str, list[float]]


def rows(models: list[Model]) -> list[Row]:
    groups: dict[tuple[Setting, bool], list[Model]] = {}
    for model in models:
        groups.setdefault((model.setting, bool(model.collapsed)), []).append(model)
    result = []
    for (setting, _), members in sorted(groups.items(), key=lambda item: repr(item[0])):
        values = {
            key: [m.run.metrics[key] for m in members if key in m.run.metrics]
            for key in TABLE
            if any(key in m.run.metrics for m in members)
        }
        reasons = "; ".join(sorted({m.collapsed for m in members if m.collapsed}))
        result.append(Row(setting, sorted(m.run.seed for m in members), reasons, values))
    return result


def metric_columns(table: list[Row]) -> list[str]:
    return [key for key in TABLE if any(key in row.values for row in table)]


def hyper_parameter_names(table: list[Row]) -> list[str]:
    return list(dict.fromkeys(k for row in table for k, _ in row.setting.hyper_parameters))


def mean_std(values: list[float]) -> tuple[float, float | None]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else None


def write_csv(path: Path, table: list[Row]) -> None:
    names, metrics = hyper_parameter_names(table), metric_columns(table)
    header = ["family", *names, "seeds", "n_seeds", "collapsed"]
    header += [c for key in metrics for c in (key, f"{key} std")]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in table:
            hyper = dict(row.setting.hyper_parameters)
            cells: list[object] = [row.setting.family, *(hyper.get(n, "") for n in names)]
            cells += [" ".join(row.seeds), len(row.seeds), row.collapsed]
            for key in metrics:
                mean, std = mean_std(row.values[key]) if row.values.get(key) else ("", None)
                cells += [mean, "" if std is None else std]
            writer.writerow(cells)


def cell(key: str, values: list[float] | None) -> str:
    if not values:
        return "–"
    mean, std = mean_std(values)
    scale, digits = (100.0, 1) if is_error(key) else (1.0, 3)
    text = f"{scale * mean:.{digits}f}"
    return text if std is None else f"{text} ± {scale * std:.{digits}f}"


def markdown(table: list[Row]) -> str:
    names, metrics = hyper_parameter_names(table), metric_columns(table)
    header = ["family", *names, "seeds", "collapsed", *(TABLE[k] for k in metrics)]
    lines = [PREAMBLE, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table:
        hyper = dict(row.setting.hyper_parameters)
        cells = [row.setting.family, *(hyper.get(n, "") or "–" for n in names)]
        cells += [str(len(row.seeds)), row.collapsed or ""]
        cells += [cell(key, row.values.get(key)) for key in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
