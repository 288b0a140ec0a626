"""advflat-eval PATH [--all] [--force] [hydra overrides...]: evaluate without retraining.

PATH is a checkpoint, a run directory (its final model; with --all every snapshot
``checkpoints/epoch_XXX.pt`` too) or a folder of runs such as a sweep (every run below it).
The resolved config the run stored inside each checkpoint decides the dataset and the
evaluation, threat model included (a loose checkpoint's as much as a run's); your overrides
apply on top, e.g. ``advflat-eval outputs/sweeps/x --all evaluation=quick`` (the run's ε and
step size, the quick metrics) or ``evaluation.epsilon=0.1`` (every attack at ε = 0.1). Results
go beside each checkpoint, one file per evaluation config (``epoch_005.pt`` →
``epoch_005.eval-<hash>.json``), and are skipped when present unless --force; for a run
directory, curves of robust loss, robust error and flatness over epochs land in curves.png.

Only the stored config is a source of config, and it never chooses where files go: keys that
would (an AutoAttack ``state_file``, a dataset's ``download``) are replaced, one warning line each.
One process at a time evaluates a run (its folder's lock; another holder is named by its PID).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advflat.cli.eval_config import with_overrides
from advflat.core.config import build
from advflat.core.errors import ConfigError
from advflat.core.io import disk_error
from advflat.core.loading import without_stored_writes
from advflat.evaluation.checkpoints import evaluate_checkpoint, pending, read_result
from advflat.evaluation.snapshot_results import result_path
from advflat.report.collect import load_run
from advflat.report.plots import curves_over_epochs
from advflat.runs.pipeline import resolve_device
from advflat.runs.run_lock import hold, release
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
    """What the run was trained and evaluated with: the copy inside its checkpoint (snapshots,
    final.pt and best.pt each carry one); keys that would choose where to write are replaced
    (``without_stored_writes``)."""
    first = job.checkpoints[0]
    config = stored_config(read(first), first)
    if config is None:
        raise ConfigError(
            f"{first} carries no run config: advflat-eval evaluates with the config a "
            "checkpoint stores only."
        )
    return without_stored_writes(config, f"checkpoint {first}")


def evaluate(job: Job, overrides: list[str], force: bool) -> dict[Path, dict[str, float]]:
    """Evaluate ``job`` while holding its folder (a run, or a loose checkpoint's folder); a
    refused config is refused before the folder is touched."""
    config = with_overrides(run_config(job), overrides, f"checkpoint {job.checkpoints[0]}")
    folder = job.run_dir or job.checkpoints[0].parent
    hold(folder, "evaluation")
    try:
        return _evaluate(job, config, force)
    finally:
        release(folder)


def _evaluate(job: Job, config: dict[str, Any], force: bool) -> dict[Path, dict[str, float]]:
    # Every option is checked before a cached result is handed back: a bad device is refused
    # whether or not there is anything left to evaluate.
    device = resolve_device(str(config.get("device", "auto")))
    evaluation_cfg = config["evaluation"]
    todo = pending(job.checkpoints, evaluation_cfg, force)
    results: dict[Path, dict[str, float]] = {}
    for path in job.checkpoints:
        if path not in todo:
            done = result_path(path, evaluation_cfg)
            log.info("%s: already evaluated (use --force to redo)", done)
            results[path] = read_result(done)
    if not todo:
        return results
    evaluation = build(evaluation_cfg, "evaluation")
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
    except OSError as error:
        found = disk_error(Path(error.filename or args.path), error)
        if found is None:
            raise
        log.error("advflat-eval: %s", found)
        sys.exit(1)


if __name__ == "__main__":
    main()
