"""advflat-eval PATH [--all] [--force] [hydra overrides...]: evaluate without retraining.

PATH is a checkpoint, or a run directory (its final model; with --all every snapshot
``checkpoints/epoch_XXX.pt`` too). The run's own overrides (``.hydra/overrides.yaml``) are
replayed so the dataset matches training, then yours are applied, e.g.
``advflat-eval outputs/runs/... --all evaluation=quick``. Results go beside each checkpoint
(``epoch_005.pt`` → ``epoch_005.json``) and are skipped when present unless --force; for a run
directory, curves of robust loss, robust error and flatness over epochs land in curves.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from advflat.cli.paths import CONFIG_DIR, CONFIG_NAME
from advflat.config import build
from advflat.errors import ConfigError
from advflat.evaluation.summary import summary_table
from advflat.io import save_json
from advflat.pipeline import resolve_device
from advflat.report.collect import load_run
from advflat.report.plots import curves_over_epochs
from advflat.training.checkpoint import load_model

log = logging.getLogger("advflat.eval")
CURVE_KEYS = ["test/robust_loss/pgd", "test/robust_error/pgd", "robust_generalization_gap/pgd",
              "flatness/average/robust", "flatness/worst/robust"]  # fmt: skip


def run_directory_of(path: Path) -> Path:
    return path.parent.parent if path.is_file() else path


def checkpoints(path: Path, every_snapshot: bool) -> list[Path]:
    if path.is_file():
        return [path]
    found = sorted((path / "checkpoints").glob("epoch_*.pt")) if every_snapshot else []
    final = path / "checkpoints" / "final.pt"
    found += [final] if final.exists() else []
    if not found:
        raise ConfigError(
            f"no checkpoints/final.pt{' or snapshots' if every_snapshot else ''} in {path}"
        )
    return found


def composed(run_dir: Path, overrides: list[str]) -> DictConfig:
    """The run's config re-composed with its own overrides, then the user's."""
    stored = run_dir / ".hydra" / "overrides.yaml"
    replay = yaml.safe_load(stored.read_text()) if stored.exists() else []
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(CONFIG_NAME, overrides=[*(replay or []), *overrides])


def evaluate(paths: list[Path], cfg: DictConfig, force: bool) -> dict[Path, dict[str, float]]:
    evaluation = build(cfg.evaluation, "evaluation")
    device = resolve_device(cfg.device)
    data = build(cfg.dataset, "dataset").to(device)
    results = {}
    for path in paths:
        out = path.with_suffix(".json")
        if out.exists() and not force:
            log.info("%s: already evaluated (use --force to redo)", out)
            results[path] = json.loads(out.read_text())
            continue
        evaluation.write_files_to(path.parent / f"{path.stem}_landscapes")
        metrics = evaluation(load_model(path, device), data)
        metrics["epoch"] = float(torch.load(path, weights_only=True)["epoch"])
        save_json(out, metrics)
        results[path] = metrics
        log.info("%s:\n%s", path.name, summary_table(metrics))
    return results


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="advflat-eval", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a checkpoint file or a run directory")
    parser.add_argument(
        "--all", action="store_true", help="every snapshot of the run, not just final.pt"
    )
    parser.add_argument("--force", action="store_true", help="recompute existing results")
    args, overrides = parser.parse_known_args(argv)
    try:
        run_dir = run_directory_of(args.path)
        evaluate(checkpoints(args.path, args.all), composed(run_dir, overrides), args.force)
    except ConfigError as error:
        log.error("advflat-eval: %s", error)
        sys.exit(2)
    if args.path.is_dir() and (run_dir / "metrics.json").exists():
        curves_over_epochs(load_run(run_dir / "metrics.json"), CURVE_KEYS, run_dir / "curves.png")


if __name__ == "__main__":
    main()
