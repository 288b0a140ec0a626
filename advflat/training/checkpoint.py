"""Checkpoints as plain dicts, loadable with ``torch.load(path, weights_only=True)``.

``last.pt`` holds everything a killed run needs to resume (model, optimizer, scheduler, EMA,
epoch, RNG states); snapshots and ``final.pt`` hold the model, its config and the run's resolved
config. The model's config (its ``_target_`` and every constructor argument, runtime ones
included) travels in each file, so ``load_model`` rebuilds the model without the caller knowing
the architecture, through the allow-list of ``advflat.models.registry`` (never Hydra: the file
is untrusted input).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advflat.errors import ConfigError
from advflat.io import save_torch
from advflat.loading import check_stored_config, load_torch
from advflat.models.registry import build_model, model_class
from advflat.schema import fail, is_number, join, mapping, number, tensor, within_depth

FORMAT = 1
# Bounds on a stored model config's arguments: far above every shipped model (widths of a few
# thousand, WideResNet depths below 100), far below what would take long to build.
MAX_ARGUMENT = 2**16
MAX_LIST = 64


def global_rng_state() -> dict[str, Any]:
    """torch's global RNG states (CPU, and every CUDA device's when there are any)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
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


def save_model(
    path: Path,
    model: nn.Module,
    model_config: dict[str, Any],
    epoch: int,
    config: dict[str, Any] | None = None,
) -> None:
    """A snapshot: the weights, the model's config and (``config``) the run's resolved config,
    so that ``advflat-eval`` finds the dataset and evaluation even for a file moved elsewhere."""
    state: dict[str, Any] = {"format": FORMAT, "epoch": epoch, "model": model.state_dict()}
    state["model_config"] = model_config
    if config:
        state["config"] = config
    save_torch(path, state)


def read(path: Path | str) -> dict[str, Any]:
    """Load a checkpoint dict safely (tensors and plain values only) and check it: its model
    config names one of advflat's models with plain, bounded arguments, and that model's
    weights are exactly the file's (checked on the meta device, so a config describing a huge
    model allocates nothing); else a one-line ConfigError naming the file and the key."""
    path = Path(path)
    state = load_torch(path, "checkpoint")
    where = f"checkpoint {path}"
    if not isinstance(state, dict) or "model" not in state or "model_config" not in state:
        raise ConfigError(
            f"checkpoint {path} is not an advflat checkpoint (it has no model/model_config)."
        )
    within_depth(state, where)
    try:
        model_class(state["model_config"])
    except ConfigError as error:
        raise ConfigError(f"checkpoint {path}: {error}") from None
    number(state.get("epoch"), where, "epoch", low=0, integer=True)
    for name, value in mapping(state["model"], where, "model").items():
        tensor(value, where, join("model", name))
    check_arguments(state["model_config"], where)
    with torch.device("meta"), warnings.catch_warnings():
        # Copying into meta tensors is a no-op torch warns about: only the shapes are compared.
        warnings.filterwarnings("ignore", message=".*meta parameter")
        load_weights(model_from_config(state["model_config"], path), state["model"], path)
    return state


def check_arguments(model_config: dict[str, Any], where: str) -> None:
    """Every number in a stored model config within ``MAX_ARGUMENT`` (in magnitude) and every
    list at most ``MAX_LIST`` long, so that even building it on the meta device is quick."""
    for name, value in model_config.items():
        key = f"model_config.{name}"
        if not isinstance(value, list | tuple):
            if is_number(value):
                number(value, where, key, -MAX_ARGUMENT, MAX_ARGUMENT)
            continue
        if len(value) > MAX_LIST:
            fail(where, key, f"has {len(value)} entries; at most {MAX_LIST}")
        for index, item in enumerate(value):
            if is_number(item):
                number(item, where, join(key, index), -MAX_ARGUMENT, MAX_ARGUMENT)


def stored_config(state: dict[str, Any], path: Path | str) -> dict[str, Any] | None:
    """The run's resolved config a checkpoint carries (None for older files), checked against
    the targets of advflat's shipped configs before anything is built from it."""
    config = state.get("config")
    if config is None:
        return None
    if not isinstance(config, dict):
        raise ConfigError(f"checkpoint {path}: its stored config is not a mapping.")
    check_stored_config(config, f"checkpoint {path}")
    return config


def load_weights(model: nn.Module, weights: dict[str, Any], path: Path | str) -> None:
    """``model.load_state_dict(weights)``; a mismatch is a one-line ConfigError naming ``path``."""
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(error).__name__)
        raise ConfigError(
            f"checkpoint {path}: its weights do not match its model config ({detail})"
        ) from None


def model_from_config(model_config: dict[str, Any], path: Path | str) -> nn.Module:
    try:
        return build_model(model_config)
    except ConfigError as error:
        raise ConfigError(f"checkpoint {path}: {error}") from None


def model_from(state: dict[str, Any], path: Path | str) -> nn.Module:
    """The model of a checkpoint ``read`` returned: built from its config, weights loaded."""
    model = model_from_config(state["model_config"], path)
    load_weights(model, state["model"], path)
    return model


def load_model(path: Path | str, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild and load the model stored in an advflat checkpoint; returned in eval mode."""
    return model_from(read(path), path).to(device).eval()
