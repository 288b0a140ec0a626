"""advflat-eval PATH [--all] [--force] [--model SOURCE] [overrides...]: evaluate without retraining.

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

``--model SOURCE`` (``MODULE:FACTORY``, ``torchvision:NAME``, ``timm:NAME``, ``robustbench:NAME``)
evaluates weights advflat did not train: ``advflat-eval --model mymodels:tiny_cnn weights.pt
dataset=cifar10`` (``advflat.cli.evaluate_weights``; results in a run folder, ``--out``). For a
run or checkpoint of a model class of your own, ``--model MODULE:CLASS`` names that class, the
one a checkpoint may then name besides advflat's models; the run's stored config decides the
rest as above.

``advflat-eval -m --model SOURCE@WEIGHTS,... dataset=NAME --out ROOT`` is a study of such weights
files: each evaluated into its own folder under ROOT, resumable (``advflat.cli.evaluate_study``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advflat.cli import evaluate_study
from advflat.cli.eval_config import with_overrides
from advflat.cli.evaluate_weights import evaluate_weights
from advflat.core.config import build
from advflat.core.errors import ConfigError
from advflat.core.io import disk_error
from advflat.core.loading import load_torch, without_stored_writes
from advflat.evaluation.checkpoints import evaluate_checkpoint, pending, read_result
from advflat.evaluation.snapshot_results import result_path
from advflat.models.factory import ModelSource, model_source
from advflat.models.registry import class_name
from advflat.report.collect import load_run
from advflat.report.plots import curves_over_epochs
from advflat.runs.pipeline import resolve_device
from advflat.runs.run_lock import hold, release
from advflat.training.checkpoint import read, stored_config

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger("advflat.eval")
PLAIN_WEIGHTS = (
    "holds weights without an advflat model config: name the architecture they belong to, "
    "advflat-eval --model MODULE:FACTORY {path} dataset=NAME (or torchvision:NAME, timm:NAME, "
    "robustbench:NAME)"
)
MULTIRUN = {"-m", "--multirun"}  # a study of external models (advflat.cli.evaluate_study)
CURVE_KEYS = ["test/robust_loss/pgd", "test/robust_error/pgd", "robust_generalization_gap/pgd",
              "flatness/average/robust", "flatness/worst/robust"]  # fmt: skip


@dataclass
class Job:
    """Checkpoints evaluated with one config: those of one run, or one loose file."""

    checkpoints: list[Path]
    run_dir: Path | None  # None for a checkpoint outside a run folder
    trusted: type[nn.Module] | None = None  # the user's model class they may name (--model)


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


def jobs(path: Path, every_snapshot: bool, trusted: type[nn.Module] | None = None) -> list[Job]:
    if not path.exists():
        raise ConfigError(f"no such file or folder: {path}")
    if path.is_file():
        inside_run = path.parent.name == "checkpoints" and is_run(path.parent.parent)
        return [Job([path], path.parent.parent if inside_run else None, trusted)]
    if is_run(path):
        return [Job(run_checkpoints(path, every_snapshot), path, trusted)]
    runs = sorted(found.parent for found in path.rglob("checkpoints") if found.is_dir())
    if not runs:
        raise ConfigError(f"{path} holds no advflat run (no checkpoints/ in it or below).")
    return [job for run in runs if (job := _sweep_job(run, every_snapshot, trusted))]


def _sweep_job(run_dir: Path, every_snapshot: bool, trusted: type[nn.Module] | None) -> Job | None:
    # One unfinished run of a sweep does not stop the others from being evaluated.
    try:
        return Job(run_checkpoints(run_dir, every_snapshot), run_dir, trusted)
    except ConfigError as error:
        log.warning("skipped: %s", error)
        return None


def run_config(job: Job) -> dict[str, Any]:
    """What the run was trained and evaluated with: the copy inside its checkpoint (snapshots,
    final.pt and best.pt each carry one); keys that would choose where to write are replaced
    (``without_stored_writes``)."""
    first = job.checkpoints[0]
    state = _read_checkpoint(first, job.trusted)
    target = state["model_config"].get("_target_")
    if job.trusted is not None and target != class_name(job.trusted):
        raise ConfigError(
            f"{first} holds a {target}, not the class --model names ({class_name(job.trusted)}); "
            "leave --model out for advflat's own models"
        )
    config = stored_config(state, first, job.trusted)
    if config is None:
        raise ConfigError(
            f"{first} carries no run config: advflat-eval evaluates with the config a "
            "checkpoint stores only."
        )
    return without_stored_writes(config, f"checkpoint {first}")


def _read_checkpoint(path: Path, trusted: type[nn.Module] | None) -> dict[str, Any]:
    """``read(path)``; a file of plain weights is told how to name their architecture."""
    try:
        return read(path, trusted)
    except ConfigError:
        if is_plain_weights(path):
            raise ConfigError(f"{path} {PLAIN_WEIGHTS.format(path=path)}") from None
        raise


def is_plain_weights(path: Path) -> bool:
    """Whether ``path`` is a readable pickle that is not an advflat checkpoint (a state_dict)."""
    try:
        loaded = load_torch(path, "checkpoint")
    except ConfigError:
        return False
    return not (isinstance(loaded, dict) and "model" in loaded and "model_config" in loaded)


def names_checkpoint_of(path: Path, trusted: type[nn.Module] | None) -> bool:
    """Whether ``path`` is a run or sweep, or an advflat checkpoint of ``trusted``'s class:
    evaluated with its stored config. Otherwise (plain weights, or a checkpoint of another
    architecture than --model's) only its weights are evaluated, in --model's architecture."""
    if path.is_dir():
        return True
    if trusted is None or not path.is_file():
        return False
    loaded = load_torch(path, "weights file")
    stored = loaded.get("model_config") if isinstance(loaded, dict) else None
    return isinstance(stored, dict) and stored.get("_target_") == class_name(trusted)


def evaluate(job: Job, overrides: list[str], force: bool) -> dict[Path, dict[str, float]]:
    """Evaluate ``job`` while holding its folder (a run, or a loose checkpoint's folder); a
    refused config is refused before the folder is touched."""
    trusted = None if job.trusted is None else class_name(job.trusted)
    where = f"checkpoint {job.checkpoints[0]}"
    config = with_overrides(run_config(job), overrides, where, trusted)
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
        results[path] = evaluate_checkpoint(
            path, evaluation, evaluation_cfg, data, device, job.trusted
        )
    return results


def _check_run_options(
    out: Path | None, source: ModelSource | None, trusted: type[nn.Module] | None
) -> None:
    """--out and a --model that is no class are for weights files only."""
    if out is not None:
        raise ConfigError(
            "--out is for --model evaluations of a weights file; a run's results are written "
            "beside its checkpoints"
        )
    if source is not None and trusted is None:
        raise ConfigError(
            f"--model {source.text} with a run folder must name the run's model class "
            "(MODULE:CLASS, a torch.nn.Module subclass)"
        )


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="advflat-eval", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a checkpoint, a run directory or a sweep")
    parser.add_argument(
        "--all", action="store_true", help="every snapshot of each run, not just final.pt"
    )
    parser.add_argument("--force", action="store_true", help="recompute existing results")
    parser.add_argument(
        "--model",
        metavar="SOURCE",
        help="the architecture of weights advflat did not train (MODULE:FACTORY, "
        "torchvision:NAME, timm:NAME, robustbench:NAME; then give dataset=NAME), or a run's own "
        "model class (MODULE:CLASS); with -m: SOURCE@WEIGHTS,... (a study of models)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="with --model and a weights file: the results' run folder (default: "
        "outputs/evals/<weights stem>-<hash>)",
    )
    return parser.parse_known_args(argv)


def evaluate_paths(args: argparse.Namespace, overrides: list[str]) -> None:
    source = None if args.model is None else model_source(args.model)
    trusted = None if source is None else source.trusted()
    # A zoo's folder (RobustBench's model_dir) holds published weights, not runs.
    zoo_folder = source is not None and source.publishes() and args.path.is_dir()
    if source is not None and (zoo_folder or not names_checkpoint_of(args.path, trusted)):
        evaluate_weights(source, args.path, overrides, args.out, args.force)
        return
    _check_run_options(args.out, source, trusted)
    for job in jobs(args.path, args.all, trusted):
        evaluate(job, overrides, args.force)
        if job.run_dir is not None and (job.run_dir / "metrics.json").exists():
            run = load_run(job.run_dir / "metrics.json")
            curves_over_epochs(run, CURVE_KEYS, job.run_dir / "curves.png")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = sys.argv[1:] if argv is None else argv
    study = bool(MULTIRUN.intersection(argv))
    # A study has no PATH (its --model names the weights files): its own parser.
    args, overrides = (None, argv) if study else parse(argv)
    try:
        if args is None:
            evaluate_study.main(overrides)
        else:
            evaluate_paths(args, overrides)
    except ConfigError as error:
        log.error("advflat-eval: %s", error)
        sys.exit(2)
    except OSError as error:
        found = disk_error(Path(error.filename or (args.path if args else ".")), error)
        if found is None:
            raise
        log.error("advflat-eval: %s", found)
        sys.exit(1)


if __name__ == "__main__":
    main()
