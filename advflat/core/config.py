"""The one place that turns config nodes into objects (`_target_` is the registry).

Constructors validate their own arguments and raise ``ValueError("epsilon must be > 0, ...")``;
``build`` re-raises that as a ``ConfigError`` prefixed with the node's config path, so the user
reads ``attack.epsilon must be > 0, got -1.0`` instead of a traceback from deep inside Hydra.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Collection
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from advflat.core.errors import ConfigError, first_line


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


def _concrete_choices(base: type) -> list[str]:
    """The public concrete advflat subclasses of ``base``, as ``_target_`` paths."""
    package = base.__module__.rpartition(".")[0]
    if package:
        importlib.import_module(package)  # its __init__ imports the implementations
    found: set[str] = set()
    pending: list[type] = list(base.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        public = not cls.__name__.startswith("_") and cls.__module__.startswith("advflat.")
        if public and not inspect.isabstract(cls):
            found.add(f"{cls.__module__}.{cls.__qualname__}")
    return sorted(found)


def _locate(target: Any) -> Any:
    """The object a dotted ``_target_`` names, or None (instantiate then reports the problem
    with Hydra's own message)."""
    if not isinstance(target, str):
        return None
    parts = target.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:split]))
            for name in parts[split:]:
                found = getattr(found, name)
            return found
        except Exception:  # not this split (or a module that fails to import): try shorter
            continue
    return None


def _check_target(node: DictConfig, path: str) -> None:
    if "_target_" not in node or OmegaConf.is_missing(node, "_target_"):
        return
    cls = _locate(node.get("_target_"))
    if inspect.isclass(cls) and inspect.isabstract(cls):
        choices = ", ".join(_concrete_choices(cls)) or "a subclass"
        where = path or "config"
        raise ConfigError(f"{where}: {node._target_} is abstract; choose one of {choices}")


def check_node(node: Any, path: str, supplied: Collection[str] = ()) -> None:
    """Fail before anything is built, naming the key, on what Hydra would report as a traceback
    from deep inside instantiate: a required value left at ``???`` (``dataset.root``), or a
    ``_target_`` naming an abstract base (``advflat.attacks.Attack``; the message lists the
    concrete choices). ``supplied``: keys of ``node`` that code passes at build time."""
    if isinstance(node, dict):
        node = OmegaConf.create(node)
    items: list[tuple[str, str | int]]
    if isinstance(node, DictConfig):
        _check_target(node, path)
        items = [(f"{path}.{key}" if path else key, key) for key in map(str, node)]
    elif isinstance(node, ListConfig):
        items = [(f"{path}[{i}]", i) for i in range(len(node))]
    else:
        return
    for child_path, key in items:
        if OmegaConf.is_missing(node, key):
            if key not in supplied:
                raise ConfigError(
                    f"{child_path} is required (no default): add {child_path}=... to the command"
                    " line or the experiment"
                )
        elif not OmegaConf.is_interpolation(node, key):
            check_node(node[key], child_path)


def build(node: Any, path: str = "", **runtime: Any) -> Any:
    """Instantiate ``node`` (a config with ``_target_``) with runtime objects passed by code.

    ``path`` is the node's location in the composed config (``"attack"``,
    ``"evaluation.metrics.pgd"``); it prefixes validation messages.
    """
    if isinstance(node, DictConfig | dict) and "_target_" not in node:
        raise ConfigError(f"{path or 'config'} needs a _target_ (got keys {list(node)})")
    check_node(node, path, supplied=runtime)
    try:
        return instantiate(node, _convert_="all", **runtime)
    except (InstantiationException, ValueError, TypeError) as error:
        cause, key = _root_cause(error)
        if isinstance(cause, ConfigError):
            raise cause from None
        message = first_line(cause)
        where = _location(path, key)
        prefix = (
            f"{where}."
            if where and isinstance(cause, ValueError)
            else f"{where}: "
            if where
            else ""
        )
        raise ConfigError(f"{prefix}{message}") from error


def checked_option(check: Callable[..., Any], name: str, *args: Any) -> Any:
    """A top-level option (``seed``) checked like a constructor argument, failing as a
    ConfigError: ``checked_option(checks.at_least, "seed", cfg.seed, 0)``."""
    try:
        return check(name, *args)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def to_container(node: Any) -> Any:
    """A resolved plain-Python copy of a config (safe for JSON and ``weights_only`` pickles)."""
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node
