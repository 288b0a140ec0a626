"""Evaluating saved checkpoints: one result file per checkpoint and evaluation config.

Shared by ``advflat-eval`` and by training runs that evaluate their snapshots
(``evaluate_snapshots: true``). Results land where ``advflat.evaluation.snapshot_results`` says
(``epoch_005.pt`` → ``epoch_005.eval-<hash>.json``), so a checkpoint already evaluated with the
same config is skipped and a preempted run resumes with the snapshots it had not reached.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from advflat.core.io import save_json
from advflat.core.schema import flat_metrics, read_json
from advflat.core.strict_json import metrics_for_json
from advflat.data.base import ImageData
from advflat.evaluation.evaluation import Evaluation
from advflat.evaluation.snapshot_results import files_dir, is_evaluated, result_path
from advflat.evaluation.summary import summary_table
from advflat.training.checkpoint import model_from, read

log = logging.getLogger(__name__)


def pending(paths: Iterable[Path], evaluation_cfg: Any, force: bool = False) -> list[Path]:
    """The checkpoints that have no result for ``evaluation_cfg`` yet (all of them with force)."""
    return [path for path in paths if force or not is_evaluated(path, evaluation_cfg)]


def evaluate_checkpoint(
    path: Path,
    evaluation: Evaluation,
    evaluation_cfg: Any,
    data: ImageData,
    device: torch.device | str = "cpu",
    trusted: type[nn.Module] | None = None,
) -> dict[str, float]:
    """Evaluate the model stored in ``path`` and write its result file; return the metrics.
    ``trusted``: the user's own model class the file may name (``advflat-eval --model``)."""
    state = read(path, trusted)
    evaluation.write_files_to(files_dir(path, evaluation_cfg))
    metrics = evaluation(model_from(state, path, trusted).to(device).eval(), data)
    metrics["epoch"] = float(state["epoch"])
    save_json(result_path(path, evaluation_cfg), metrics_for_json(metrics))
    log.info("%s:\n%s", path.name, summary_table(metrics))
    return metrics


def evaluate_snapshots(
    checkpoints: Path,
    evaluation: Evaluation,
    evaluation_cfg: Any,
    data: ImageData,
    device: torch.device | str = "cpu",
    trusted: type[nn.Module] | None = None,
) -> float:
    """Evaluate every ``epoch_XXX.pt`` snapshot in ``checkpoints`` not evaluated yet with this
    config; return the seconds spent (0 when every snapshot already has its result).
    ``trusted``: the user's own model class the run built, which its snapshots name."""
    todo = pending(sorted(Path(checkpoints).glob("epoch_*.pt")), evaluation_cfg)
    started = time.perf_counter()
    for path in tqdm(todo, desc="snapshots", leave=False, disable=None):
        evaluate_checkpoint(path, evaluation, evaluation_cfg, data, device, trusted)
    return time.perf_counter() - started


def read_result(path: Path) -> dict[str, float]:
    """A checkpoint's result file, checked (metrics: name → number or null)."""
    return flat_metrics(read_json(path), path)


def same_weights(model: nn.Module, weights: dict[str, Any]) -> bool:
    """Whether ``model``'s state is exactly ``weights`` (same keys, bitwise equal tensors)."""
    state = model.state_dict()
    if state.keys() != weights.keys():
        return False
    return all(torch.equal(state[key].cpu(), weights[key].cpu()) for key in state)


def reuse_last_snapshot(
    checkpoints: Path, model: nn.Module, evaluation_cfg: Any, files_to: Path
) -> dict[str, float] | None:
    """The metrics of the newest snapshot when it holds exactly ``model``'s weights and was
    evaluated with this config (its files copied to ``files_to``); None otherwise.

    The snapshot may name ``model``'s own class (the run built it from its command line).
    A run whose last epoch is a snapshot would otherwise evaluate the same weights twice: every
    metric draws its randomness from the run seed and its own name, not from the file, so the
    second evaluation could only repeat the first. The ``cost/*`` entries stay with the
    snapshot's result, so a report counts those seconds once.
    """
    snapshots = sorted(Path(checkpoints).glob("epoch_*.pt"))
    if not snapshots or not is_evaluated(snapshots[-1], evaluation_cfg):
        return None
    if not same_weights(model, read(snapshots[-1], type(model))["model"]):
        return None
    stored = read_result(result_path(snapshots[-1], evaluation_cfg))
    # The seconds were spent (and are counted) on the snapshot; this evaluation cost nothing.
    metrics = {k: v for k, v in stored.items() if k != "epoch" and not k.startswith("cost/")}
    files = files_dir(snapshots[-1], evaluation_cfg)
    if files.is_dir():
        shutil.copytree(files, files_to, dirs_exist_ok=True)
    log.info("the final model is %s: its evaluation is reused", snapshots[-1].name)
    return metrics
