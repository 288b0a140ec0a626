"""The config ``advflat-eval`` evaluates with: the run's stored, resolved config plus overrides.

A run stores its fully resolved config (``config.json``, and inside every snapshot), so a
re-evaluation uses what the run used, not today's conf/ files. The user's overrides apply on
top, as Hydra would apply them: group selections (``evaluation=quick``) first, taken from the
packaged conf (composed from those selections alone), then values
(``evaluation.metrics.pgd.attack.steps=5``) in the order given.

The threat model (``evaluation.epsilon``, ``evaluation.step_size``) is the run's: a group
selection changes the metrics, not the ε they are measured at, and every attack of the
evaluation follows the two keys again (the stored config holds resolved values, so the
interpolations are put back), so ``evaluation.epsilon=0.1`` changes what every attack runs
with. A config that stores no threat model is refused unless the command line gives one.
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
from advflat.cli.unknown_keys import unknown_key
from advflat.core.config import to_container
from advflat.core.errors import ConfigError, first_line
from advflat.core.loading import check_stored_config
from advflat.evaluation.threat_model import FOLLOWS, THREAT_MODEL

_ABSENT = object()
# Keys every evaluation has: set without a + even where a stored config lacks them.
THREAT_KEYS = tuple(f"evaluation.{key}" for key in THREAT_MODEL)


def packaged_config(overrides: list[str], resolve: bool = False) -> dict[str, Any]:
    """The packaged conf composed with ``overrides`` (unresolved: interpolations kept)."""
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            composed = compose(CONFIG_NAME, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(f"overrides {overrides}: {first_line(error)}") from None
    return OmegaConf.to_container(composed, resolve=resolve)  # type: ignore[return-value]


def with_overrides(
    stored: dict[str, Any],
    overrides: list[str],
    where: str = "the run's config",
    trusted_model: str | None = None,
) -> dict[str, Any]:
    """``stored`` with ``overrides`` applied, resolved and checked like a stored config.

    A group selection takes its node from the packaged conf composed with the selections alone:
    the run's command line (``.hydra/overrides.yaml``) is a file anyone can edit, so it is never
    a source of config. The threat model stays the stored one unless a value sets it; ``where``
    names the config in the refusal of one that has none; ``trusted_model`` is the name of
    the user's model class (``--model``) its ``model._target_`` may be.
    """
    parsed = parse_overrides(overrides)
    groups = [item for item in parsed if _is_group(item)]
    config = copy.deepcopy(stored)
    threat = {key: _get(config, key) for key in THREAT_KEYS}
    if groups:
        packaged = packaged_config([override_line(i) for i in groups])
        for item in groups:
            key = _node_key(item)
            _set(config, key, copy.deepcopy(_get(packaged, key)))
    _follow_threat_model(config, threat)
    for item in parsed:
        if not _is_group(item):
            _apply_value(config, item)
    require_threat_model(config, where)
    try:
        resolved = to_container(OmegaConf.create(config))
    except OmegaConfBaseException as error:
        raise ConfigError(f"overrides {overrides}: {first_line(error)}") from None
    check_stored_config(resolved, "the evaluation config", trusted_model=trusted_model)
    return resolved


def _follow_threat_model(config: dict[str, Any], threat: dict[str, Any]) -> None:
    """Give the evaluation the run's threat model (``threat``, as stored: a selected group's
    packaged ε is CIFAR's) and let every attack of its metrics follow it. A value given
    afterwards for one attack (``evaluation.metrics.pgd.attack.epsilon=0.1``) is that attack's
    own; the results record what each attack ran with."""
    evaluation = config.get("evaluation")
    if not isinstance(evaluation, dict):
        return
    for key, value in threat.items():
        *_, name = key.split(".")
        if value is _ABSENT:
            evaluation.pop(name, None)
        else:
            evaluation[name] = value
    _link(evaluation.get("metrics"))


def _link(node: Any) -> None:
    """Each attack key of ``node`` (``epsilon``, ``step_size``, the joint attack's
    ``input_lr``) becomes the interpolation of the threat-model key it follows."""
    if isinstance(node, list):
        for value in node:
            _link(value)
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in FOLLOWS and value is not None and not isinstance(value, dict | list):
            node[key] = f"${{evaluation.{FOLLOWS[key]}}}"
        else:
            _link(value)


def require_threat_model(config: dict[str, Any], where: str) -> None:
    """Refuse a config without ε or step size, naming the keys to give (``where``: whose)."""
    missing = [key for key in THREAT_KEYS if _get(config, key) in (_ABSENT, None)]
    if missing:
        given = " ".join(f"{key}=VALUE" for key in missing)
        raise ConfigError(
            f"{where} stores no threat model ({', '.join(missing)}): give it on the command "
            f"line ({given})"
        )


def parse_overrides(overrides: list[str]) -> list[Override]:
    """Command-line overrides parsed as Hydra parses them, one value per key (an evaluation is
    one run: a sweep's ``a,b`` is refused)."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as error:
        raise ConfigError(f"overrides: {first_line(error)}") from None
    for item in parsed:
        if item.is_sweep_override():
            raise ConfigError(f"{override_line(item)}: an evaluation takes one value per key.")
    return parsed


def _is_group(item: Override) -> bool:
    return not item.is_delete() and (CONFIG_DIR / item.key_or_group).is_dir()


def _node_key(item: Override) -> str:
    return item.package or item.key_or_group.replace("/", ".")


def _apply_value(config: dict[str, Any], item: Override) -> None:
    key = item.key_or_group
    if item.is_delete():
        _delete(config, key, override_line(item))
        return
    settable = item.is_add() or item.is_force_add() or key in THREAT_KEYS
    if _get(config, key) is _ABSENT and not settable:
        raise ConfigError(f"{override_line(item)}: {_missing(config, key)}")
    _set(config, key, item.value())


def _missing(config: dict[str, Any], key: str) -> str:
    """The line for a key the run's config lacks: its first missing part, with the nearest
    keys at that level (a typo is likelier than a new key; ``+KEY=...`` adds one)."""
    node: Any = config
    found: list[str] = []
    for part in key.split("."):
        found.append(part)
        if not isinstance(node, dict) or part not in node:
            break
        node = node[part]
    return unknown_key(".".join(found), node if isinstance(node, dict) else {})


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


def override_line(item: Override) -> str:
    return item.input_line or item.key_or_group
