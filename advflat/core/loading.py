"""Reading back what advflat wrote, without ever running code stored in a file.

Two rules cover every file: pickles are opened with ``torch.load(weights_only=True)`` (tensors,
containers and plain values only; a refused file says so instead of passing on torch's advice
to switch the protection off), and a stored config may name only ``_target_`` classes that
advflat's own shipped config files name, with plain values (no ``_args_``, no interpolations).
Models have a stricter allow-list of their own (``advflat.models.registry``); a model class of
the user's own passes only when the user names it on the command line (``trusted_model``).

A stored config also never chooses where advflat writes nor whether it downloads
(``without_stored_writes``): every file a re-evaluation writes is placed by the run folder and
the evaluation's hash.
"""

from __future__ import annotations

import copy
import functools
import logging
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml

from advflat.core.errors import ConfigError
from advflat.core.schema import within_depth

log = logging.getLogger(__name__)
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
TARGET = "_target_"
# Keys Hydra's instantiate acts on; of these, stored configs may carry only what shipped
# configs use (``_partial_: true`` for optimizers, built later with the parameters).
ALLOWED_RESERVED = {TARGET, "_partial_"}
PLAIN_SCALARS = (str, int, float, bool, type(None))
MODEL = "model"  # the run config's model node, the one place a user's own class may be named
_GLOBAL = re.compile(r"GLOBAL (\S+)")
UNREADABLE = "not a pickle of tensors and plain values, the only kind advflat unpickles"


def load_torch(path: Path | str, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a refused or corrupt file is a
    one-line ConfigError naming ``what`` (e.g. "checkpoint", "AutoAttack state")."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of foreign files before refusing them.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = _GLOBAL.search(str(error))
        if found:  # the file names a Python object to call or rebuild: code, refused
            raise ConfigError(refusal(path, what, found.group(1))) from None
        raise ConfigError(corrupt(path, what, error)) from None
    except Exception as error:  # noqa: BLE001 — garbage bytes can fail anywhere in the unpickler
        raise ConfigError(corrupt(path, what, error)) from None


def refusal(path: Path, what: str, name: str) -> str:
    return (
        f"{what} {path} holds objects other than tensors and plain values ({name}); "
        "advflat refuses to unpickle code."
    )


def corrupt(path: Path, what: str, error: BaseException) -> str:
    text = str(error)
    first = text.splitlines()[0] if text else type(error).__name__
    if "weights_only" in text:
        # torch's message opens with advice to switch the protection off; keep only the facts.
        first = UNREADABLE
    return f"{what} {path} is corrupt or not an advflat {what} ({first})."


@functools.cache
def shipped_targets() -> frozenset[str]:
    """Every ``_target_`` named in the config files shipped with advflat (read once)."""
    found: set[str] = set()
    for file in CONF_DIR.rglob("*.yaml"):
        _collect_targets(yaml.safe_load(file.read_text()), found)
    return frozenset(found)


def _collect_targets(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        if isinstance(node.get(TARGET), str):
            found.add(node[TARGET])
        for value in node.values():
            _collect_targets(value, found)
    elif isinstance(node, list):
        for value in node:
            _collect_targets(value, found)


def check_stored_config(
    node: Any, where: str, key: str = "", trusted_model: str | None = None
) -> None:
    """Refuse a stored config unless every ``_target_`` is a shipped one and every value plain.

    ``where`` names the file in the message; ``key`` is the node's location in the config.
    ``trusted_model``: the ``_target_`` of a model class the user named on the command line,
    allowed as ``model._target_`` (and nowhere else).
    The whole config is first bounded in depth, so the walk below cannot recurse without end.
    """
    if not key:
        within_depth(node, where)
    if isinstance(node, dict):
        _check_node(node, where, key, trusted_model if key == MODEL else None)
        for name, value in node.items():
            check_stored_config(value, where, f"{key}.{name}" if key else str(name), trusted_model)
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            check_stored_config(value, where, f"{key}[{index}]", trusted_model)
    elif not isinstance(node, PLAIN_SCALARS):
        raise ConfigError(
            f"{where}: {key or 'the config'} holds a {type(node).__name__}; "
            "a stored config holds plain values only."
        )
    elif isinstance(node, str) and "${" in node:
        raise ConfigError(
            f"{where}: {key} holds the interpolation {node!r}; "
            "a stored config is resolved and holds plain values only."
        )


def _check_node(node: dict, where: str, key: str, trusted: str | None) -> None:
    for name in node:
        if not isinstance(name, str):
            raise ConfigError(f"{where}: {key or 'the config'} has a non-string key {name!r}.")
        if name.startswith("_") and name.endswith("_") and name not in ALLOWED_RESERVED:
            raise ConfigError(
                f"{where}: {_join(key, name)} is not allowed in a stored config "
                f"(only {sorted(ALLOWED_RESERVED)} are)."
            )
    target = node.get(TARGET)
    named = trusted is not None and target == trusted  # the user's own model class
    if TARGET in node and target not in shipped_targets() and not named:
        hint = _model_hint(trusted) if key == MODEL else ""
        raise ConfigError(
            f"{where}: {_join(key, TARGET)} = {target!r} is not a class advflat's own configs "
            f"use, so advflat refuses to build it{hint}."
        )
    if "_partial_" in node and not isinstance(node["_partial_"], bool):
        raise ConfigError(f"{where}: {_join(key, '_partial_')} must be true or false.")


def _model_hint(trusted: str | None) -> str:
    if trusted is None:
        return " (a model class of your own: name it on the command line with --model MODULE:CLASS)"
    return f" (nor is it the model class named on the command line, {trusted!r})"


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


# Keys whose stored value would choose a place to write (or make a dataset fetch into its root),
# with the value they get instead and why. Read-only paths (a dataset's root) stay: reading is
# all a re-evaluation does with them once ``download`` is off.
STORED_WRITES = {
    "state_file": (None, "AutoAttack progress is kept in the evaluation's folder in the run"),
    "output_dir": (None, "files are written to the evaluation's folder in the run"),
    "download": (False, "a stored config never makes a dataset download"),
}


def without_stored_writes(config: dict[str, Any], where: str) -> dict[str, Any]:
    """A copy of ``config`` in which no key of ``STORED_WRITES`` keeps a value read from disk;
    each replaced key is one warning line naming it (``where`` names the file)."""
    confined = copy.deepcopy(config)
    _confine(confined, where, "")
    return confined


def _confine(node: Any, where: str, key: str) -> None:
    if isinstance(node, list):
        for index, value in enumerate(node):
            _confine(value, where, f"{key}[{index}]")
    if not isinstance(node, dict):
        return
    for name, value in node.items():
        path = _join(key, str(name))
        if name in STORED_WRITES and value != STORED_WRITES[name][0]:
            replacement, reason = STORED_WRITES[name]
            log.warning(
                "%s: %s = %r is not used (%s); set to %r", where, path, value, reason, replacement
            )
            node[name] = replacement
        else:
            _confine(value, where, path)
