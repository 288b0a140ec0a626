"""advflat-report DIR: one CSV + markdown table of every run below DIR, and the paper's plots.

Writes into DIR/report/ (or --out): table.csv, table.md, correlations.json,
``<flatness>_vs_test_robust_loss.png``, ``<flatness>_vs_robust_generalization_gap.png`` (linear
fit, Pearson and Kendall across runs) and curves/<run>.png (metrics over epochs for every run).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from advflat.evaluation.summary import HEADLINE
from advflat.io import save_json
from advflat.report.collect import Run, collect
from advflat.report.plots import curves_over_epochs, scatter_with_fit
from advflat.report.table import aggregate, columns, markdown, write_csv

log = logging.getLogger("advflat.report")

CURVES = ["train/adversarial_loss", "test/adversarial_loss", "test/adversarial_error",
          "test/robust_loss/pgd", "flatness/average/robust"]  # fmt: skip
TARGETS = {
    "test_robust_loss": "test/robust_loss/pgd",
    "robust_generalization_gap": "robust_generalization_gap/pgd",
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="advflat-report", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="a sweep directory, or outputs/")
    parser.add_argument("--out", type=Path, help="where to write (default: DIRECTORY/report)")
    parser.add_argument(
        "--metrics", nargs="+", help="table columns (default: the headline metrics)"
    )
    parser.add_argument(
        "--flatness", default="flatness/average/robust", help="x axis of the scatter plots"
    )
    return parser.parse_args(argv)


def correlation_plots(runs: list[Run], flatness: str, out: Path) -> dict[str, object]:
    results = {}
    for name, key in TARGETS.items():
        path = out / f"{flatness.replace('/', '_')}_vs_{name}.png"
        fit = scatter_with_fit(runs, flatness, key, path)
        if fit is not None:
            results[f"{flatness} vs {key}"] = dataclasses.asdict(fit)
    return results


def report(directory: Path, out: Path, metrics: list[str] | None, flatness: str) -> list[Run]:
    runs = collect(directory)
    if not runs:
        raise FileNotFoundError(f"no runs (metrics.json files) found below {directory}")
    out.mkdir(parents=True, exist_ok=True)
    metrics = metrics or [m for m in HEADLINE if any(m in r.metrics for r in runs)]
    rows = aggregate(runs, metrics)
    write_csv(out / "table.csv", rows, columns(runs, metrics))
    (out / "table.md").write_text(markdown(rows, runs, metrics))
    save_json(out / "correlations.json", correlation_plots(runs, flatness, out))
    (out / "curves").mkdir(exist_ok=True)
    for run in runs:
        name = str(run.path.relative_to(directory)).replace("/", "_") or "run"
        curves_over_epochs(run, CURVES, out / "curves" / f"{name}.png")
    return runs


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse(argv)
    out = args.out or args.directory / "report"
    try:
        runs = report(args.directory, out, args.metrics, args.flatness)
    except FileNotFoundError as error:
        log.error("advflat-report: %s", error)
        sys.exit(2)
    log.info("%d runs → %s\n%s", len(runs), out, (out / "table.md").read_text())


if __name__ == "__main__":
    main()
