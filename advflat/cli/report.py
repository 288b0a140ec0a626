"""advflat-report DIR: the paper's table and figures from every run below DIR.

Writes into DIR/report/ (or --out):
  table.csv, table.md     one row per method (family + swept hyper-parameters), mean ± std over
                          seeds (table.md adds one row per run when there are several);
                          collapsed runs marked; notes on what is missing; the cost
  cost.md                 training and evaluation seconds per family (when runs record cost/*)
  correlations.json       flatness vs test robust loss / robust generalization gap: Pearson,
                          Spearman, 95 % bootstrap CIs, n, at the final and best snapshots
  correlations.md         with several seeds: those correlations per seed and pooled
  correlations/*.png      the scatter plots of those pairs
  over_epochs/*.png       train/test robust loss and robust flatness over epochs, per method
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from advflat.core.errors import ConfigError
from advflat.core.io import save_json, save_text
from advflat.report.collect import Run, gather
from advflat.report.correlation_table import correlations_markdown
from advflat.report.cost import cost_markdown, has_cost
from advflat.report.families import (
    TRAINED,
    Model,
    Setting,
    collapse_reason,
    epsilon,
    setting_of,
    source,
    swept_keys,
    xi,
)
from advflat.report.names import flatness_label
from advflat.report.over_epochs import FLATNESS, Caption, over_epochs_plot
from advflat.report.plots import epsilon_text
from advflat.report.seed_repeats import several_seeds
from advflat.report.study import Outcome, correlations
from advflat.report.table import markdown, rows, write_csv

log = logging.getLogger("advflat.report")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="advflat-report", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="a sweep directory, or outputs/")
    parser.add_argument("--out", type=Path, help="where to write (default: DIRECTORY/report)")
    parser.add_argument(
        "--classes",
        type=int,
        default=10,
        help="classes K of the dataset, for runs without diagnostics/collapsed: a clean error "
        "≥ 1 − 1/K − 0.02 counts as collapsed (default: 10)",
    )
    args = parser.parse_args(argv)
    if args.classes < 2:
        parser.error(f"--classes must be >= 2, got {args.classes}")
    return args


def file_name(setting: Setting) -> str:
    text = setting.label.replace(" = ", "=").replace(", ", "_")
    return "".join(c if c.isalnum() or c in "=._-" else "_" for c in text).strip("_")


def over_epochs(runs: list[Run], settings: dict[Path, Setting], out: Path) -> list[str]:
    drawn = 0
    for setting in sorted({settings[run.path] for run in runs}, key=lambda s: s.label):
        members = [run for run in runs if settings[run.path] == setting]
        radius = xi(members[0], FLATNESS)
        title = f"{setting.label}, robust loss at {epsilon_text(epsilon(members[0]))}"
        caption = Caption(title, flatness_label(FLATNESS, radius))
        drawn += over_epochs_plot(members, caption, out / f"{file_name(setting)}.png")
    if drawn:
        return []
    return [f"no over-epoch plots: none of the {len(runs)} runs has history.json or evaluated "
            "snapshots (advflat-eval RUN --all)"]  # fmt: skip


def over_epoch_notes(trained: list[Model], settings: dict[Path, Setting], out: Path) -> list[str]:
    """Over-epoch plots of the runs advflat trained; models evaluated from elsewhere
    (``advflat-eval --model``) have no training history to draw."""
    own = [m.run for m in trained if source(m.run) == TRAINED]
    notes = over_epochs(own, settings, out) if own else []
    if len(own) < len(trained):
        external = len(trained) - len(own)
        notes.append(
            f"no over-epoch plots for the {external} external evaluations "
            "(advflat-eval --model): they have no training history"
        )
    return notes


def collapsed_notes(models: list[Model]) -> list[str]:
    return [
        f"collapsed, left out of the correlations: {m.setting.label}, seed {m.run.seed} "
        f"({m.run.path}): {m.collapsed}"
        for m in models
        if m.collapsed
    ]


def report(directory: Path, out: Path, classes: int) -> list[str]:
    """Write the report; returns the notes (what is missing or left out, one line each)."""
    runs, left_out = gather(directory)
    if not runs:
        found = f"no runs (metrics.json files) found below {directory}"
        raise FileNotFoundError("; ".join([found, *left_out]))
    keys = swept_keys(runs)
    settings = {run.path: setting_of(run, keys) for run in runs}
    models = [Model(r, settings[r.path], collapse_reason(r, classes)) for r in runs]
    notes = left_out + collapsed_notes(models)
    trained = [m for m in models if not m.collapsed]
    if trained:
        outcome = correlations(trained, out / "correlations")
        notes += outcome.messages + over_epoch_notes(trained, settings, out / "over_epochs")
    else:
        outcome = Outcome([], [])
        notes.append(f"no correlation or over-epoch plots: all {len(runs)} runs collapsed")
    save_json(out / "correlations.json", outcome.entries)
    if several_seeds(models):
        save_text(out / "correlations.md", correlations_markdown(outcome.entries, models))
    table = rows(models)
    write_csv(out / "table.csv", table)
    text = markdown(table)
    if has_cost(runs):
        cost = cost_markdown(runs)
        save_text(out / "cost.md", cost)
        text += "\n## Cost (seconds)\n\n" + cost
    if notes:
        text += "\n## Notes\n\n" + "".join(f"- {note}\n" for note in notes)
    save_text(out / "table.md", text)
    return notes


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse(argv)
    out = args.out or args.directory / "report"
    try:
        notes = report(args.directory, out, args.classes)
    except (FileNotFoundError, ConfigError) as error:  # a full disk is a WriteError
        log.error("advflat-report: %s", error)
        sys.exit(2)
    for note in notes:
        log.warning("advflat-report: %s", note)
    log.info("report → %s\n%s", out, (out / "table.md").read_text())


if __name__ == "__main__":
    main()
