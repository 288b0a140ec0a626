"""Checkpoints as plain dicts, loadable with ``torch.load(path, weights_only=True)``.

``last.pt`` holds everything a killed run needs to resume (model, optimizer, scheduler, EMA,
epoch, RNG states); snapshots and ``final.pt`` hold the model and its config only. The model's
config (its ``_target_`` and every constructor argument, runtime ones included) travels in each
file, so ``load_model`` rebuilds the model without the caller knowing the architecture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from advflat.config import build
from advflat.errors import ConfigError
from advflat.io import save_torch

FORMAT = 1
MODEL_PACKAGE = "advflat.models."


def global_rng_state() -> dict[str, Any]:
    """torch's global RNG states (CPU, and every CUDA device's when there are any)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    return {**global_rng_state(), "data": generator.get_state()}


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    set_global_rng_state(state)
    generator.set_state(state["data"])


def save_model(path: Path, model: nn.Module, model_config: dict[str, Any], epoch: int) -> None:
    save_torch(
        path,
        {
            "format": FORMAT,
            "epoch": epoch,
            "model": model.state_dict(),
            "model_config": model_config,
        },
    )


def read(path: Path | str) -> dict[str, Any]:
    """Load a checkpoint dict safely; a missing or corrupt file is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 — garbage bytes can fail anywhere in the unpickler
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(
            f"checkpoint {path} is corrupt or not an advflat checkpoint ({first})"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "model_config" not in state:
        raise ConfigError(f"checkpoint {path} is not an advflat checkpoint (no model/model_config)")
    return state


def build_model(model_config: dict[str, Any]) -> nn.Module:
    """Build a model from a stored config, refusing targets outside advflat's own models."""
    target = str(model_config.get("_target_", ""))
    if not target.startswith(MODEL_PACKAGE):
        raise ConfigError(
            f"refusing to build {target!r}: checkpoints may only name {MODEL_PACKAGE}* classes"
        )
    return build(model_config, "model")


def load_model(path: Path | str, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild and load the model stored in an advflat checkpoint; returned in eval mode."""
    state = read(path)
    model = build_model(state["model_config"])
    model.load_state_dict(state["model"])
    return model.to(device).eval()
