"""The models a checkpoint may rebuild: an explicit name → class table, nothing else.

A checkpoint's ``model_config`` is read from disk, so it is never given to Hydra: its
``_target_`` must be one of the exact names below (as the shipped model configs spell them),
every other key a keyword of that class's constructor with a plain value (str, int, float,
bool, None, or a list of those), and the class is called directly with the checked arguments.

A model class of the user's own is trusted only when the user names it on the command line
(``trusted_class``, e.g. ``--model mymodels:Tiny``, or the ``model._target_`` of the training
command itself): a stored ``_target_`` equal to that class's name then builds it, checked the
same way. The name in the file alone never selects, nor imports, anything.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from advflat.core.errors import ConfigError
from advflat.models.factory import model_source
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


def class_name(cls: type) -> str:
    """The ``_target_`` that names ``cls`` by the module defining it (as Hydra locates it)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def model_class(
    model_config: dict[str, Any], trusted: type[nn.Module] | None = None
) -> type[nn.Module]:
    """The class a stored model config names, after checking every key and value: one of
    ``MODELS``, or ``trusted`` (a class the user named on the command line) when the config's
    ``_target_`` is that class's ``class_name``."""
    if not isinstance(model_config, dict):
        raise ConfigError(f"model_config must be a mapping, got {type(model_config).__name__}.")
    target = model_config.get("_target_")
    cls = named_class(target, trusted)
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


def named_class(target: Any, trusted: type[nn.Module] | None) -> type[nn.Module]:
    """The class ``target`` names: a built-in one, else ``trusted`` when it is its name."""
    if isinstance(target, str) and target in MODELS:
        return MODELS[target]
    if trusted is not None and target == class_name(trusted):
        return trusted
    if trusted is not None:
        raise ConfigError(
            f"refusing to build {target!r}: it is neither the model class named on the command "
            f"line ({class_name(trusted)!r}, by the module defining it) nor one of "
            f"{sorted(MODELS)}."
        )
    raise ConfigError(
        f"refusing to build {target!r}: a checkpoint may only name one of {sorted(MODELS)}, "
        "or a class of your own named on the command line (--model MODULE:CLASS)."
    )


def trusted_class(spec: str) -> type[nn.Module]:
    """The model class a command line names as ``MODULE:CLASS`` or ``MODULE.CLASS``, imported
    as ``--model`` imports it (``advflat.models.factory``): only ever from what the user typed."""
    module_name, colon, name = spec.partition(":")
    if not colon:
        module_name, _, name = spec.rpartition(".")
    if not module_name or not name:
        raise ConfigError(
            f"model class {spec!r} must be given as MODULE:CLASS (e.g. mymodels:Tiny)."
        )
    found = model_source(f"{module_name}:{name}").trusted()
    if found is None:
        raise ConfigError(f"model class {spec!r} is not a torch.nn.Module class.")
    return found


def build_model(model_config: dict[str, Any], trusted: type[nn.Module] | None = None) -> nn.Module:
    """Check ``model_config`` (see ``model_class``) and call the class with its arguments."""
    cls = model_class(model_config, trusted)
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
