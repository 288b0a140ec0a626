"""advflat-eval PATH [--all] [--force] [hydra overrides...]: evaluate without retraining.

PATH is a checkpoint, a run directory (its final model; with --all every snapshot
``checkpoints/epoch_XXX.pt`` too) or a folder of runs such as a sweep (every run below it).
The run's stored, resolved config (``config.json``, or the one inside the checkpoint) decides
the dataset and the evaluation; your overrides apply on top, e.g.
``advflat-eval outputs/sweeps/x --all evaluation=quick``. Results go beside each checkpoint, one
file per evaluation config (``epoch_005.pt`` → ``epoch_005.eval-<hash>.json``), and are skipped
when present unless --force; for a run directory, curves of robust loss, robust error and
flatness over epochs land in curves.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from advflat.cli.eval_config import packaged_config, with_overrides
from advflat.config import build
from advflat.errors import ConfigError
from advflat.evaluation.checkpoints import evaluate_checkpoint, pending
from advflat.loading import check_stored_config
from advflat.pipeline import resolve_device
from advflat.report.collect import load_run
from advflat.report.plots import curves_over_epochs
from advflat.snapshot_results import result_path
from advflat.training.checkpoint import read, stored_config

log = logging.getLogger("advflat.eval")
CURVE_KEYS = ["test/robust_loss/pgd", "test/robust_error/pgd", "robust_generalization_gap/pgd",
              "flatness/average/robust", "flatness/worst/robust"]  # fmt: skip


@dataclass
class Job:
    """Checkpoints evaluated with one config: those of one run, or one loose file."""

    checkpoints: list[Path]
    run_dir: Path | None  # None for a checkpoint outside a run folder


def is_run(folder: Path) -> bool:
    return (folder / "checkpoints").is_dir() or (folder / "config.json").is_file()


def run_checkpoints(run_dir: Path, every_snapshot: bool) -> list[Path]:
    found = sorted((run_dir / "checkpoints").glob("epoch_*.pt")) if every_snapshot else []
    final = run_dir / "checkpoints" / "final.pt"
    found += [final] if final.is_file() else []
    if not found:
        hint = "" if every_snapshot else "; add --all to evaluate its snapshots"
        raise ConfigError(f"{run_dir} holds no finished model (no checkpoints/final.pt){hint}.")
    return found


def jobs(path: Path, every_snapshot: bool) -> list[Job]:
    if not path.exists():
        raise ConfigError(f"no such file or folder: {path}")
    if path.is_file():
        inside_run = path.parent.name == "checkpoints" and is_run(path.parent.parent)
        return [Job([path], path.parent.parent if inside_run else None)]
    if is_run(path):
        return [Job(run_checkpoints(path, every_snapshot), path)]
    runs = sorted(found.parent for found in path.rglob("checkpoints") if found.is_dir())
    if not runs:
        raise ConfigError(f"{path} holds no advflat run (no checkpoints/ in it or below).")
    return [job for run in runs if (job := _sweep_job(run, every_snapshot))]


def _sweep_job(run_dir: Path, every_snapshot: bool) -> Job | None:
    # One unfinished run of a sweep does not stop the others from being evaluated.
    try:
        return Job(run_checkpoints(run_dir, every_snapshot), run_dir)
    except ConfigError as error:
        log.warning("skipped: %s", error)
        return None


def run_config(job: Job) -> dict[str, Any]:
    """What the run was trained and evaluated with: the copy inside its checkpoint (exact,
    key order included), else config.json (written with sorted keys), else a re-composition."""
    first = job.checkpoints[0]
    config = stored_config(read(first), first)
    config_file = None if job.run_dir is None else job.run_dir / "config.json"
    if config is None and config_file is not None and config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{config_file} is not valid JSON ({error}).") from None
        check_stored_config(config, str(config_file))
    return _recomposed(job.run_dir) if config is None else config


def replay_of(run_dir: Path | None) -> list[str]:
    """The run's own command-line overrides (none for a checkpoint outside a run folder)."""
    stored = None if run_dir is None else run_dir / ".hydra" / "overrides.yaml"
    if stored is None or not stored.is_file():
        return []
    lines = yaml.safe_load(stored.read_text()) or []
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise ConfigError(f"{stored} is not a list of overrides.")
    return lines


def _recomposed(run_dir: Path | None) -> dict[str, Any]:
    # Checkpoints written before they carried their config: replay the run's overrides.
    replay = replay_of(run_dir)
    log.warning("no stored run config: using the packaged config with overrides %s", replay)
    return packaged_config(replay, resolve=True)


def evaluate(job: Job, overrides: list[str], force: bool) -> dict[Path, dict[str, float]]:
    config = with_overrides(run_config(job), overrides, replay_of(job.run_dir))
    evaluation_cfg = config["evaluation"]
    todo = pending(job.checkpoints, evaluation_cfg, force)
    results: dict[Path, dict[str, float]] = {}
    for path in job.checkpoints:
        if path not in todo:
            done = result_path(path, evaluation_cfg)
            log.info("%s: already evaluated (use --force to redo)", done)
            results[path] = json.loads(done.read_text())
    if not todo:
        return results
    evaluation = build(evaluation_cfg, "evaluation")
    device = resolve_device(str(config.get("device", "auto")))
    data = build(config["dataset"], "dataset").to(device)
    for path in todo:
        results[path] = evaluate_checkpoint(path, evaluation, evaluation_cfg, data, device)
    return results


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="advflat-eval", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a checkpoint, a run directory or a sweep")
    parser.add_argument(
        "--all", action="store_true", help="every snapshot of each run, not just final.pt"
    )
    parser.add_argument("--force", action="store_true", help="recompute existing results")
    args, overrides = parser.parse_known_args(argv)
    try:
        for job in jobs(args.path, args.all):
            evaluate(job, overrides, args.force)
            if job.run_dir is not None and (job.run_dir / "metrics.json").exists():
                run = load_run(job.run_dir / "metrics.json")
                curves_over_epochs(run, CURVE_KEYS, job.run_dir / "curves.png")
    except ConfigError as error:
        log.error("advflat-eval: %s", error)
        sys.exit(2)


if __name__ == "__main__":
    main()
