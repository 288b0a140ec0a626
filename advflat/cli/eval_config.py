"""The config ``advflat-eval`` evaluates with: the run's stored, resolved config plus overrides.

A run stores its fully resolved config (``config.json``, and inside every snapshot), so a
re-evaluation uses what the run used, not today's conf/ files. The user's overrides apply on
top, as Hydra would apply them: group selections (``evaluation=quick``) first, taken from the
packaged conf (composed from those selections alone), then values
(``evaluation.metrics.pgd.attack.steps=5``) in the order given. Because the stored config is
resolved, a value no longer follows the key it was interpolated from: ``evaluation.epsilon=0.1``
alone leaves the attacks' ε as stored; select the group again to re-derive them
(``evaluation=paper evaluation.epsilon=0.1``).
"""

from __future__ import annotations

import copy
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from advflat.cli.paths import CONFIG_DIR, CONFIG_NAME
from advflat.core.config import to_container
from advflat.core.errors import ConfigError, first_line
from advflat.core.loading import check_stored_config

_ABSENT = object()


def packaged_config(overrides: list[str], resolve: bool = False) -> dict[str, Any]:
    """The packaged conf composed with ``overrides`` (unresolved: interpolations kept)."""
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            composed = compose(CONFIG_NAME, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(f"overrides {overrides}: {first_line(error)}") from None
    return OmegaConf.to_container(composed, resolve=resolve)  # type: ignore[return-value]


def with_overrides(stored: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``stored`` with ``overrides`` applied, resolved and checked like a stored config.

    A group selection takes its node from the packaged conf composed with the selections alone:
    the run's command line (``.hydra/overrides.yaml``) is a file anyone can edit, so it is never
    a source of config.
    """
    parsed = _parse(overrides)
    groups = [item for item in parsed if _is_group(item)]
    config = copy.deepcopy(stored)
    if groups:
        packaged = packaged_config([_line(i) for i in groups])
        for item in groups:
            key = _node_key(item)
            _set(config, key, copy.deepcopy(_get(packaged, key)))
    for item in parsed:
        if not _is_group(item):
            _apply_value(config, item)
    try:
        resolved = to_container(OmegaConf.create(config))
    except OmegaConfBaseException as error:
        raise ConfigError(f"overrides {overrides}: {first_line(error)}") from None
    check_stored_config(resolved, "the evaluation config")
    return resolved


def _parse(overrides: list[str]) -> list[Override]:
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as error:
        raise ConfigError(first_line(error)) from None
    for item in parsed:
        if item.is_sweep_override():
            raise ConfigError(f"{_line(item)}: advflat-eval takes one value per key.")
    return parsed


def _is_group(item: Override) -> bool:
    return not item.is_delete() and (CONFIG_DIR / item.key_or_group).is_dir()


def _node_key(item: Override) -> str:
    return item.package or item.key_or_group.replace("/", ".")


def _apply_value(config: dict[str, Any], item: Override) -> None:
    key = item.key_or_group
    if item.is_delete():
        _delete(config, key, _line(item))
        return
    if _get(config, key) is _ABSENT and not (item.is_add() or item.is_force_add()):
        raise ConfigError(
            f"{_line(item)}: the run's config has no key {key!r} (prefix it with + to add it)."
        )
    _set(config, key, item.value())


def _get(node: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def _set(config: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = config
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


def _delete(config: dict[str, Any], key: str, line: str) -> None:
    *parents, last = key.split(".")
    parent = _get(config, ".".join(parents)) if parents else config
    if not isinstance(parent, dict) or last not in parent:
        raise ConfigError(f"{line}: the run's config has no key {key!r} to delete.")
    del parent[last]


def _line(item: Override) -> str:
    return item.input_line or item.key_or_group
