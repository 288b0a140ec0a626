"""run_experiment: seed → build (everything validated first) → fit (resuming) → evaluate → write.

Runtime objects flow by code, never by mutating the composed config: the dataset tells the model
its input shape, classes and normalisation; the attack is handed to the trainer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from advflat.config import build, to_container
from advflat.errors import ConfigError
from advflat.evaluation.summary import summary_table
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


def build_all(cfg: DictConfig) -> dict[str, Any]:
    """Build every object; cheap ones first so bad options fail before data is loaded."""
    attack = build(cfg.attack, "attack")
    weight_attack = build(cfg.weight_attack, "weight_attack")
    trainer = build(cfg.trainer, "trainer", attack=attack, weight_attack=weight_attack)
    evaluation = build(cfg.evaluation, "evaluation")
    device = resolve_device(cfg.device)
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


def run_experiment(cfg: DictConfig, out_dir: Path | str) -> dict[str, float]:
    run = RunDirectory(out_dir, seed=cfg.seed, config=to_container(cfg))
    finished = run.finished_metrics()
    if finished is not None:
        log.info("%s already finished with this config: skipped", out_dir)
        return finished
    torch.manual_seed(cfg.seed)
    objects = build_all(cfg)
    run.model_config = objects["model_config"]
    try:
        model = objects["trainer"].fit(objects["model"], objects["data"], run)
        evaluation = objects["evaluation"].write_files_to(run.path / "landscapes")
        metrics = evaluation(model, objects["data"])
        path = run.write_metrics(metrics)
    finally:
        run.close()
    log.info("results (%s):\n%s", path, summary_table(metrics))
    return metrics
