"""Checkpoints as plain dicts, loadable with ``torch.load(path, weights_only=True)``.

``last.pt`` holds everything a killed run needs to resume (model, optimizer, scheduler, EMA,
epoch, RNG states); snapshots and ``final.pt`` hold the model, its config and the run's resolved
config. The model's config (its ``_target_`` and every constructor argument, runtime ones
included) travels in each file, so ``load_model`` rebuilds the model without the caller knowing
the architecture, through the allow-list of ``advflat.models.registry`` (never Hydra: the file
is untrusted input). A model class of the user's own is rebuilt only when the caller passes it
as ``trusted``: to resume, the class this run built from its command line's config.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim import Optimizer

from advflat.core.errors import ConfigError
from advflat.core.io import save_torch
from advflat.core.loading import check_stored_config, load_torch
from advflat.core.schema import fail, is_number, join, mapping, number, tensor, within_depth
from advflat.models.registry import MODELS, build_model, class_name, model_class
from advflat.training.resume_checks import check_resume_state

if TYPE_CHECKING:
    from advflat.training.run_directory import RunDirectory
    from advflat.training.trainer import Trainer

log = logging.getLogger(__name__)

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


def read(path: Path | str, trusted: type[nn.Module] | None = None) -> dict[str, Any]:
    """Load a checkpoint dict safely (tensors and plain values only) and check it: its model
    config names one of advflat's models (or ``trusted``, a class the user named) with plain,
    bounded arguments, and that model's weights are exactly the file's (checked on the meta
    device, so a config describing a huge model allocates nothing); else a one-line
    ConfigError naming the file and the key."""
    path = Path(path)
    state = load_torch(path, "checkpoint")
    where = f"checkpoint {path}"
    if not isinstance(state, dict) or "model" not in state or "model_config" not in state:
        raise ConfigError(
            f"checkpoint {path} is not an advflat checkpoint (it has no model/model_config)."
        )
    within_depth(state, where)
    try:
        model_class(state["model_config"], trusted)
    except ConfigError as error:
        raise ConfigError(f"checkpoint {path}: {error}") from None
    number(state.get("epoch"), where, "epoch", low=0, integer=True)
    for name, value in mapping(state["model"], where, "model").items():
        tensor(value, where, join("model", name))
    check_arguments(state["model_config"], where)
    with torch.device("meta"), warnings.catch_warnings():
        # Copying into meta tensors is a no-op torch warns about: only the shapes are compared.
        warnings.filterwarnings("ignore", message=".*meta parameter")
        load_weights(model_from_config(state["model_config"], path, trusted), state["model"], path)
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


def stored_config(
    state: dict[str, Any], path: Path | str, trusted: type[nn.Module] | None = None
) -> dict[str, Any] | None:
    """The run's resolved config a checkpoint carries (None for older files), checked against
    the targets of advflat's shipped configs (and, as ``model._target_``, ``trusted``'s name)
    before anything is built from it."""
    config = state.get("config")
    if config is None:
        return None
    if not isinstance(config, dict):
        raise ConfigError(f"checkpoint {path}: its stored config is not a mapping.")
    trusted_model = None if trusted is None else class_name(trusted)
    check_stored_config(config, f"checkpoint {path}", trusted_model=trusted_model)
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


def model_from_config(
    model_config: dict[str, Any], path: Path | str, trusted: type[nn.Module] | None = None
) -> nn.Module:
    try:
        return build_model(model_config, trusted)
    except ConfigError as error:
        raise ConfigError(f"checkpoint {path}: {error}") from None


def model_from(
    state: dict[str, Any], path: Path | str, trusted: type[nn.Module] | None = None
) -> nn.Module:
    """The model of a checkpoint ``read`` returned: built from its config, weights loaded."""
    model = model_from_config(state["model_config"], path, trusted)
    load_weights(model, state["model"], path)
    return model


def load_model(
    path: Path | str, device: torch.device | str = "cpu", trusted: type[nn.Module] | None = None
) -> nn.Module:
    """Rebuild and load the model stored in an advflat checkpoint; returned in eval mode.
    ``trusted``: a model class of the caller's own that the file may name."""
    return model_from(read(path, trusted), path, trusted).to(device).eval()


# ---- a run's last.pt: written after every epoch, read back to resume ---------------------
# Ranks > 0 draw attack noise from their own stream: rank r's global seed is seed + r·RANK_SEED.
RANK_SEED = 1_000_003


def training_state(trainer: Trainer, model: nn.Module, epoch: int, run: RunDirectory) -> dict:
    """Everything a killed run needs to go on bitwise after ``epoch``."""
    return {
        "format": FORMAT,
        "epoch": epoch,
        "model": model.state_dict(),
        "model_config": run.model_config,
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "ema": None if trainer.ema is None else trainer.ema.state_dict(),
        "method": trainer.method_state(),
        "rng": rng_state(trainer.generator),
        # Each rank's own global RNG (its attack noise), so a resumed job replays exactly.
        "rng_ranks": trainer.distributed.gather(global_rng_state()),
        "config": run.config,
    }


def save(trainer: Trainer, model: nn.Module, run: RunDirectory, epoch: int) -> None:
    """last.pt after ``epoch`` (and a snapshot every ``snapshot_every`` epochs)."""
    state = training_state(trainer, model, epoch, run)  # every rank: gathering RNGs is collective
    if not run.writes:
        return
    save_torch(run.last_checkpoint, state)
    if trainer.snapshot_every and epoch % trainer.snapshot_every == 0:
        save_model(run.snapshot(epoch), model, run.model_config, epoch, config=run.config)


def resume(trainer: Trainer, model: nn.Module, run: RunDirectory) -> int:
    """Restore ``trainer`` and ``model`` from last.pt when ``run`` has one (checked first);
    return the first epoch to train.

    The file may name ``model``'s own class: this run built it from the config it was given
    (its command line, or ``advflat resume=RUN --model MODULE:CLASS``), never from the file."""
    warn_unless_resumable(model, run)
    if not run.last_checkpoint.exists():
        return 1
    state = read(run.last_checkpoint, type(model))
    if run.config and state.get("config") and state["config"] != run.config:
        raise ConfigError(
            f"{run.last_checkpoint} belongs to a run with a different config; "
            "resume with the same overrides or choose another hydra.run.dir"
        )
    check_resume_state(trainer, model, state, run)
    model.load_state_dict(state["model"])
    load_optimizer(trainer.optimizer, state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    if trainer.ema is not None and state.get("ema") is not None:
        trainer.ema.load_state_dict(state["ema"])
    trainer.load_method_state(state.get("method") or {})
    set_rng_state(state["rng"], trainer.generator)
    restore_rank_rng(trainer, state, run.seed)
    log.info("resuming from %s after epoch %d", run.last_checkpoint, state["epoch"])
    return int(state["epoch"]) + 1


def warn_unless_resumable(model: nn.Module, run: RunDirectory) -> None:
    """Warn, before training, when this run's checkpoints will name a model class that reading
    them cannot rebuild: a ``_target_`` that is not the class it built by its own module's
    name (a function returning a model, or a class re-exported by another module)."""
    target = run.model_config.get("_target_")
    if target is None or target in MODELS or target == class_name(type(model)):
        return
    log.warning(
        "model._target_ %r built a %s: this run's checkpoints can be resumed and evaluated only "
        "when model._target_ names a model class by the module defining it (e.g. %s)",
        target,
        class_name(type(model)),
        class_name(type(model)),
    )


def restore_rank_rng(trainer: Trainer, state: dict[str, Any], seed: int) -> None:
    """This rank's global RNG as it was; resumed with another number of processes, a fresh
    stream per rank and epoch."""
    ranks = state.get("rng_ranks") or []
    rank = trainer.distributed.rank
    if len(ranks) == trainer.distributed.world_size:
        set_global_rng_state(ranks[rank])
    elif rank > 0:
        torch.manual_seed(seed + RANK_SEED * rank + int(state["epoch"]))


def load_optimizer(optimizer: Optimizer, state: dict[str, Any]) -> None:
    """Load ``state`` but keep this run's kernel flags (a state dict carries fused/foreach)."""
    kernels = ("fused", "foreach")
    flags = [{k: group[k] for k in kernels if k in group} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, own in zip(optimizer.param_groups, flags, strict=True):
        group.update(own)
