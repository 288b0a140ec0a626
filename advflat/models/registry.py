"""The models a checkpoint may rebuild: an explicit name → class table, nothing else.

A checkpoint's ``model_config`` is read from disk, so it is never given to Hydra: its
``_target_`` must be one of the exact names below (as the shipped model configs spell them),
every other key a keyword of that class's constructor with a plain value (str, int, float,
bool, None, or a list of those), and the class is called directly with the checked arguments.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from advflat.core.errors import ConfigError
from advflat.models.lenet import LeNet
from advflat.models.mlp import MLP
from advflat.models.preact_resnet import PreActResNet18
from advflat.models.resnet import ResNet18
from advflat.models.simplenet import SimpleNet
from advflat.models.wide_resnet import WideResNet

MODELS: dict[str, type[nn.Module]] = {
    f"advflat.models.{cls.__name__}": cls
    for cls in (LeNet, MLP, PreActResNet18, ResNet18, SimpleNet, WideResNet)
}
SCALARS = (str, int, float, bool, type(None))


def model_class(model_config: dict[str, Any]) -> type[nn.Module]:
    """The class a stored model config names, after checking every key and value."""
    if not isinstance(model_config, dict):
        raise ConfigError(f"model_config must be a mapping, got {type(model_config).__name__}.")
    target = model_config.get("_target_")
    if target not in MODELS:
        raise ConfigError(
            f"refusing to build {target!r}: a checkpoint may only name one of {sorted(MODELS)}."
        )
    cls = MODELS[target]
    keywords = set(inspect.signature(cls.__init__).parameters) - {"self"}
    for key, value in model_config.items():
        if key == "_target_":
            continue
        if key not in keywords:
            raise ConfigError(
                f"model_config.{key} is not an argument of {target}; allowed: {sorted(keywords)}."
            )
        if isinstance(value, dict):
            raise ConfigError(
                f"model_config.{key} is a nested config node ({value!r}); a stored model config "
                "holds plain values only, and advflat builds nothing nested from a file."
            )
        if not _plain(value):
            raise ConfigError(
                f"model_config.{key} must be a plain value or a list of plain values, "
                f"got {value!r}."
            )
    return cls


def build_model(model_config: dict[str, Any]) -> nn.Module:
    """Check ``model_config`` (see ``model_class``) and call the class with its arguments."""
    cls = model_class(model_config)
    kwargs = {key: value for key, value in model_config.items() if key != "_target_"}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        separator = "." if isinstance(error, ValueError) else ": "
        raise ConfigError(f"model{separator}{message}") from None


def _plain(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return all(isinstance(item, SCALARS) for item in value)
    return isinstance(value, SCALARS)
