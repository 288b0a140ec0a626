"""One row per method (family + hyper-parameters): the paper's metrics, mean ± std over seeds.

A single seed shows its value alone (no "± 0.00"); the ``seeds`` columns say how many there
were. Collapsed runs get rows of their own, marked, so they never blur a method's average.
The std is the sample standard deviation (n − 1). When some method has several seeds, the
markdown adds one row per run below, so each seed's values stay visible. The ``source`` column
says where a row's models came from: ``advflat`` (trained here) or the ``--model`` of an external
evaluation; table.md shows it when some row is external.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass
from pathlib import Path

from advflat.report.families import TRAINED, Model, Setting
from advflat.report.names import TABLE, is_error
from advflat.report.seed_repeats import seed_order, several_seeds

PREAMBLE = (
    "Errors in %; losses, the robust generalization gap (test − train robust loss) and flatness "
    "(increase of the robust loss under weight perturbations) in nats; mean ± std over seeds, "
    "`seeds` = how many. Collapsed runs (trained to chance level) have their own rows."
)
SEEDS_PREAMBLE = (
    "Several seeds: ± is the sample standard deviation (n − 1) over the `seeds` runs of a row; "
    "every run is listed below (Runs), and the correlations per seed and pooled over all runs "
    "are in `correlations.md`."
)
SOURCE_PREAMBLE = (
    "`source`: `advflat` for runs advflat trained, else the `--model` an external evaluation "
    "named (advflat-eval --model); external evaluations have no training history, so no "
    "over-epoch plots."
)
RUNS_HEADING = "## Runs (one row per seed)"


@dataclass
class Row:
    setting: Setting
    seeds: list[str]
    collapsed: str
    values: dict[str, list[float]]
    members: list[Model]  # in seed order


def rows(models: list[Model]) -> list[Row]:
    groups: dict[tuple[Setting, bool], list[Model]] = {}
    for model in models:
        groups.setdefault((model.setting, bool(model.collapsed)), []).append(model)
    result = []
    for (setting, _), found in sorted(groups.items(), key=lambda item: repr(item[0])):
        members = sorted(found, key=run_seed_order)
        values = {
            key: [m.run.metrics[key] for m in members if key in m.run.metrics]
            for key in TABLE
            if any(key in m.run.metrics for m in members)
        }
        reasons = "; ".join(sorted({m.collapsed for m in members if m.collapsed}))
        result.append(Row(setting, [m.run.seed for m in members], reasons, values, members))
    return result


def run_seed_order(model: Model) -> tuple[int, float, str]:
    return seed_order(model.run.seed)


def metric_columns(table: list[Row]) -> list[str]:
    return [key for key in TABLE if any(key in row.values for row in table)]


def hyper_parameter_names(table: list[Row]) -> list[str]:
    return list(dict.fromkeys(k for row in table for k, _ in row.setting.hyper_parameters))


def mean_std(values: list[float]) -> tuple[float, float | None]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else None


def write_csv(path: Path, table: list[Row]) -> None:
    names, metrics = hyper_parameter_names(table), metric_columns(table)
    header = ["family", "source", *names, "seeds", "n_seeds", "collapsed"]
    header += [c for key in metrics for c in (key, f"{key} std")]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in table:
            hyper = dict(row.setting.hyper_parameters)
            cells: list[object] = [row.setting.family, row.setting.source]
            cells += [hyper.get(n, "") for n in names]
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


def header_lines(header: list[str]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]


def has_external(table: list[Row]) -> bool:
    """Whether a row holds models advflat did not train: then table.md shows ``source`` too
    (table.csv always has it)."""
    return any(row.setting.source != TRAINED for row in table)


def setting_header(table: list[Row]) -> list[str]:
    source = ["source"] if has_external(table) else []
    return ["family", *source, *hyper_parameter_names(table)]


def setting_cells(row: Row, table: list[Row]) -> list[str]:
    hyper = dict(row.setting.hyper_parameters)
    source = [row.setting.source] if has_external(table) else []
    names = hyper_parameter_names(table)
    return [row.setting.family, *source, *(hyper.get(n, "") or "–" for n in names)]


def runs_markdown(table: list[Row]) -> list[str]:
    """One line per run: its method, seed and own values (no ±)."""
    metrics = metric_columns(table)
    header = [*setting_header(table), "seed", "collapsed", *(TABLE[k] for k in metrics)]
    lines = header_lines(header)
    for row in table:
        for model in row.members:
            cells = [*setting_cells(row, table), model.run.seed, model.collapsed or ""]
            values = model.run.metrics
            cells += [cell(key, [values[key]] if key in values else None) for key in metrics]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(table: list[Row]) -> str:
    metrics = metric_columns(table)
    header = [*setting_header(table), "seeds", "collapsed", *(TABLE[k] for k in metrics)]
    seeds = several_seeds([model for row in table for model in row.members])
    lines = [PREAMBLE, *(["", SEEDS_PREAMBLE] if seeds else [])]
    lines += [*(["", SOURCE_PREAMBLE] if has_external(table) else []), "", *header_lines(header)]
    for row in table:
        cells = [*setting_cells(row, table), str(len(row.seeds)), row.collapsed or ""]
        cells += [cell(key, row.values.get(key)) for key in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    if seeds:
        lines += ["", RUNS_HEADING, "", *runs_markdown(table)]
    return "\n".join(lines) + "\n"
