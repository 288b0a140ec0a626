"""run_experiment: seed → build (everything validated first) → fit (resuming) → evaluate → write.

Runtime objects flow by code, never by mutating the composed config: the dataset tells the model
its input shape, classes and normalisation; the attack is handed to the trainer.

A job with several processes (torchrun, or submitit/SLURM tasks:
``advflat.training.distributed``) trains data-parallel: every rank builds the same objects,
trains its share of each global batch and reads the same run folder (rank 0's, when the ranks'
clocks name different ones); rank 0 alone writes, evaluates and returns the metrics (the other
ranks return an empty dict)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from advflat.core import checks
from advflat.core.config import build, checked_option, to_container
from advflat.core.errors import ConfigError
from advflat.core.strict_json import metrics_for_json
from advflat.evaluation.checkpoints import evaluate_snapshots, reuse_last_snapshot
from advflat.evaluation.summary import summary_table
from advflat.runs.run_lock import hold, release
from advflat.training.distributed import Distributed, DistributedOptions
from advflat.training.run_directory import RunDirectory

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks the GPU when there is one; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r} ({error})"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r} requested but CUDA is not available (use device=auto or cpu)"
        )
    return device


def model_runtime(data: Any) -> dict[str, Any]:
    """What a model constructor learns from its dataset (stored with every checkpoint)."""
    return {
        "num_classes": data.num_classes,
        "input_shape": list(data.input_shape),
        "mean": data.mean,
        "std": data.std,
    }


def start_distributed(cfg: DictConfig) -> Distributed:
    """Join the job's process group when it has several processes (else: one, on cfg.device)."""
    node = cfg.get("distributed")
    options = DistributedOptions() if node is None else build(node, "distributed")
    return options.start(resolve_device(cfg.device))


def build_all(cfg: DictConfig, device: torch.device | None = None) -> dict[str, Any]:
    """Build every object; cheap ones first so bad options fail before data is loaded."""
    attack = build(cfg.attack, "attack")
    weight_attack = build(cfg.weight_attack, "weight_attack")
    trainer = build(cfg.trainer, "trainer", attack=attack, weight_attack=weight_attack)
    evaluation = build(cfg.evaluation, "evaluation")
    device = resolve_device(cfg.device) if device is None else device
    data = build(cfg.dataset, "dataset").to(device)
    runtime = model_runtime(data)
    model = build(cfg.model, "model", **runtime).to(device)
    model_config = {**to_container(cfg.model), **runtime}
    return {
        "trainer": trainer,
        "evaluation": evaluation,
        "data": data,
        "model": model,
        "model_config": model_config,
    }


def evaluate_final(
    model: torch.nn.Module, objects: dict[str, Any], run: RunDirectory, snapshots_cfg: Any
) -> dict[str, float]:
    """The final model's metrics; taken from the last snapshot's result when the run evaluated
    its snapshots (``snapshots_cfg``: their evaluation config, None when it did not) and that
    snapshot holds the same weights (no second, identical evaluation)."""
    evaluation, files = objects["evaluation"], run.path / "landscapes"
    if snapshots_cfg is not None:
        reused = reuse_last_snapshot(run.checkpoints, model, snapshots_cfg, files)
        if reused is not None:
            return reused
    evaluation.write_files_to(files)
    return evaluation(model, objects["data"])


def run_experiment(cfg: DictConfig, out_dir: Path | str) -> dict[str, float]:
    checked_option(checks.at_least, "seed", cfg.seed, 0)  # numpy rejects < 0, torch wraps it
    distributed = start_distributed(cfg)
    try:
        folder = Path(distributed.shared(str(out_dir)))
        refusal = distributed.shared(_hold(folder) if distributed.is_main else None)
        if refusal is not None:  # every rank stops, not only rank 0
            raise ConfigError(refusal)
        try:
            return _run(cfg, folder, distributed)
        finally:
            release(folder)
    finally:
        distributed.close()


def _hold(folder: Path) -> str | None:
    """Lock the run folder (rank 0 writes, so rank 0 alone holds it); the refusal, if any."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        hold(folder, "training")
    except ConfigError as error:
        return str(error)
    return None


def _run(cfg: DictConfig, out_dir: Path, distributed: Distributed) -> dict[str, float]:
    run = RunDirectory(out_dir, seed=cfg.seed, config=to_container(cfg), writes=distributed.is_main)
    finished = run.finished_metrics()
    if finished is not None:
        log.info("%s already finished with this config: skipped", out_dir)
        return finished if distributed.is_main else {}
    torch.manual_seed(cfg.seed)
    objects = build_all(cfg, distributed.device)
    run.model_config = objects["model_config"]
    try:
        started = time.perf_counter()
        model = objects["trainer"].fit(objects["model"], objects["data"], run, distributed)
        training_seconds = time.perf_counter() - started  # this process's share after a resume
        distributed.barrier()  # every rank is done with collectives; rank 0 evaluates alone
        distributed.close()
        if not distributed.is_main:
            return {}
        evaluation, data = objects["evaluation"], objects["data"]
        costs = {"cost/training": training_seconds}
        evaluation_cfg = None
        if cfg.get("evaluate_snapshots", False):
            evaluation_cfg = to_container(cfg.evaluation)
            # The class this run built from the user's command line: its snapshots may name it.
            trusted = type(objects["model"])
            seconds = evaluate_snapshots(
                run.checkpoints, evaluation, evaluation_cfg, data, distributed.device, trusted
            )
            costs["cost/snapshot_evaluation"] = seconds
        metrics = {**evaluate_final(model, objects, run, evaluation_cfg), **costs}
        metrics.update(objects["trainer"].diagnostics())  # diagnostics/collapsed: 1 or 0
        path = run.write_metrics(metrics_for_json(metrics))
    finally:
        run.close()
    log.info("results (%s):\n%s", path, summary_table(metrics))
    return metrics
