"""``advflat-eval -m --model SOURCE@WEIGHTS,... dataset=NAME [overrides] --out ROOT``.

A study over weights advflat did not train: every model is evaluated as ``advflat-eval --model
SOURCE WEIGHTS`` would (``advflat.cli.evaluate_weights``, the same overrides for all), one after
another in this process, each into a run folder of its own, ``ROOT/<source>-<weights stem>``.
The folder is named by the model alone, so the same command again skips the models it finished
(their folders hold this evaluation) and evaluates the rest; another evaluation into ROOT is
refused (``--force`` redoes it). ``--model`` takes a comma-separated list and may be repeated.
``advflat-report ROOT`` then reads the study like a sweep of trained runs.

``cluster=local|slurm`` (with any ``hydra.launcher.KEY=VALUE``, as for a training sweep) runs
the models that are not finished as one submitit job each instead, waits for them and names the
failed ones with their logs (exit status 1); ``advflat.cli.study_launcher``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from advflat.cli.evaluate_weights import evaluate_weights
from advflat.cli.study_launcher import StudyJob, executor_of, launch, submitit_launcher
from advflat.core.errors import ConfigError
from advflat.models.factory import ModelSource, model_source
from advflat.runs.failed_jobs import summary
from advflat.runs.sweep_folders import job_folder

log = logging.getLogger("advflat.eval")
SEPARATOR = "@"
DONE = "metrics.json"  # written last by an evaluation: its folder is finished
FORM = "SOURCE@WEIGHTS (e.g. mymodels:tiny_cnn@weights.pt), comma-separated"
# Overrides of the launcher (advflat.cli.study_launcher), not of the evaluation.
LAUNCHER_KEYS = ("cluster", "hydra/launcher", "hydra.launcher.")


@dataclass(frozen=True)
class Entry:
    """One model of a study: its architecture, its weights and its folder's name under ROOT."""

    source: ModelSource
    weights: Path

    @property
    def folder(self) -> str:
        """Named like a sweep's job folder: unsafe characters (``:``, ``/``) become ``_``."""
        return job_folder(f"{self.source.text}-{self.weights.stem}")

    @property
    def text(self) -> str:
        return f"{self.source.text}{SEPARATOR}{self.weights}"


def entry(text: str) -> Entry:
    """``SOURCE@WEIGHTS`` as an Entry; the weights file must exist."""
    source, separator, weights = text.partition(SEPARATOR)  # a source has no @
    if not separator or not source or not weights:
        raise ConfigError(f"-m --model takes {FORM}; got {text!r}")
    path = Path(weights)
    if not path.is_file():
        raise ConfigError(f"-m --model {text}: no such weights file: {path}")
    return Entry(model_source(source), path)


def entries(values: list[str]) -> list[Entry]:
    """Every model the ``--model`` values list, in order; two that would share a folder (the
    same source and weights file name) are refused."""
    found = [entry(item.strip()) for value in values for item in value.split(",")]
    if not found:
        raise ConfigError(f"-m: name the models with --model {FORM}")
    seen: dict[str, Entry] = {}
    for item in found:
        other = seen.setdefault(item.folder, item)
        if other is not item:
            raise ConfigError(
                f"-m --model: {other.text} and {item.text} would share the folder "
                f"{item.folder}: give the weights files different names"
            )
    return found


def launcher_overrides(overrides: list[str]) -> list[str]:
    return [item for item in overrides if item.lstrip("+~").startswith(LAUNCHER_KEYS)]


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="advflat-eval -m", description=__doc__.splitlines()[0].strip("`")
    )
    parser.add_argument("-m", "--multirun", action="store_true", help="a study of models")
    parser.add_argument(
        "--model", action="append", default=[], metavar="SOURCE@WEIGHTS,...", help=FORM
    )
    parser.add_argument("--out", type=Path, help="the study's folder: one run folder per model")
    parser.add_argument("--force", action="store_true", help="recompute existing results")
    args, overrides = parser.parse_known_args(argv)
    unknown = [item for item in overrides if item.startswith("-")]
    if unknown:
        raise ConfigError(f"-m: unknown option {unknown[0]} (allowed: --model, --out, --force)")
    if args.out is None:
        raise ConfigError("-m: give the study's folder, --out ROOT (one run folder per model)")
    return args, overrides


def evaluate_study(
    models: list[Entry], overrides: list[str], root: Path, force: bool
) -> dict[Path, dict[str, float]]:
    """Evaluate every model into ``root/<its folder>``: in this process, or one job each when
    ``cluster=`` names a submitit launcher."""
    launcher_args = launcher_overrides(overrides)
    rest = [item for item in overrides if item not in launcher_args]
    launcher = submitit_launcher(launcher_args, root) if launcher_args else None
    if launcher is None:
        return evaluate_here(models, rest, root, force)
    # Finished models are confirmed (or refused) here, before anything is submitted.
    finished = [m for m in models if not force and (root / m.folder / DONE).is_file()]
    results = evaluate_here(finished, rest, root, force)
    jobs = [StudyJob(m.text, m.source, m.weights, root / m.folder) for m in models]
    pending = [job for job in jobs if job.folder not in results]
    log.info("%d of %d models to evaluate in jobs", len(pending), len(models))
    done, failures = launch(executor_of(launcher), pending, rest, force)
    if failures:
        log.error("%s", summary(failures))
        sys.exit(1)  # like a sweep with failed jobs
    return {**results, **done}


def evaluate_here(
    models: list[Entry], overrides: list[str], root: Path, force: bool
) -> dict[Path, dict[str, float]]:
    """Evaluate the models one after another in this process; the first that fails ends the
    study (the finished ones stay, and the same command resumes after them)."""
    results: dict[Path, dict[str, float]] = {}
    for index, model in enumerate(models, 1):
        folder = root / model.folder
        log.info("[%d/%d] %s → %s", index, len(models), model.text, folder)
        try:
            results[folder] = evaluate_weights(
                model.source, model.weights, overrides, folder, force
            )
        except ConfigError as error:
            raise ConfigError(f"model {index} of {len(models)} ({model.text}): {error}") from None
    return results


def main(argv: list[str]) -> None:
    """``advflat-eval -m ...`` (errors are ConfigErrors, reported by advflat-eval's main)."""
    args, overrides = parse(argv)
    evaluate_study(entries(args.model), overrides, args.out, args.force)
