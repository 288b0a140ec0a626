"""The one place that turns config nodes into objects (`_target_` is the registry).

Constructors validate their own arguments and raise ``ValueError("epsilon must be > 0, ...")``;
``build`` re-raises that as a ``ConfigError`` prefixed with the node's config path, so the user
reads ``attack.epsilon must be > 0, got -1.0`` instead of a traceback from deep inside Hydra.
"""

from __future__ import annotations

import re
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from advflat.errors import ConfigError


def _register_resolvers() -> None:
    # ε and step sizes are written in pixel units, e.g. ${div:8,255}.
    resolvers = {
        "div": lambda a, b: float(a) / float(b),
        "mul": lambda a, b: float(a) * float(b),
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


_register_resolvers()


# Hydra ends the message of a failed nested node with its location below the built node.
_FULL_KEY = re.compile(r"^full_key: (\S+)$", re.MULTILINE)


def _root_cause(error: BaseException) -> tuple[BaseException, str]:
    """The constructor's own error and the key of the node that raised it ("" for the root).

    Hydra wraps constructor errors, one level per nested node; the innermost wrapper names the
    deepest node, e.g. ``metrics.pgd`` when building ``evaluation``.
    """
    key = ""
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        found = _FULL_KEY.search(str(error))
        key = found.group(1) if found else key
        error = error.__cause__
    return error, key


def _location(path: str, key: str) -> str:
    # A node taken from the composed config knows its absolute key ("evaluation.metrics.pgd");
    # a node built on its own knows only the part below itself ("metrics.pgd").
    if not key or key == path or key.startswith(f"{path}."):
        return key or path
    return ".".join(part for part in (path, key) if part)


def build(node: Any, path: str = "", **runtime: Any) -> Any:
    """Instantiate ``node`` (a config with ``_target_``) with runtime objects passed by code.

    ``path`` is the node's location in the composed config (``"attack"``,
    ``"evaluation.metrics.pgd"``); it prefixes validation messages.
    """
    if isinstance(node, DictConfig | dict) and "_target_" not in node:
        raise ConfigError(f"{path or 'config'} needs a _target_ (got keys {list(node)})")
    try:
        return instantiate(node, _convert_="all", **runtime)
    except (InstantiationException, ValueError, TypeError) as error:
        cause, key = _root_cause(error)
        if isinstance(cause, ConfigError):
            raise cause from None
        message = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        where = _location(path, key)
        prefix = (
            f"{where}."
            if where and isinstance(cause, ValueError)
            else f"{where}: "
            if where
            else ""
        )
        raise ConfigError(f"{prefix}{message}") from error


def to_container(node: Any) -> Any:
    """A resolved plain-Python copy of a config (safe for JSON and ``weights_only`` pickles)."""
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node
