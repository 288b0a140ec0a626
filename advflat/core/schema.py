"""Checking a file read back before any of its values is used: one line naming the file and key.

Anything advflat reads back may have been truncated, edited or crafted, so each reader states
what it expects (keys, types, tensor shapes and dtypes, numeric ranges) with the checks below,
and every file is bounded in size and nesting depth before it is walked (a crafted file must
not exhaust the stack or the memory). A failed check is one ``ConfigError`` line,
``<file>: <key> <what is wrong>``, which the command-line tools print and exit with.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import Tensor

from advflat.core.errors import ConfigError

# advflat's own files nest fewer than 10 levels; the bound only stops crafted ones early.
MAX_DEPTH = 64
# A JSON file advflat writes (a run's config, its per-epoch history) stays far below this.
MAX_JSON_BYTES = 64 * 2**20
WHOLE = "the file"


def fail(where: object, key: str, problem: str) -> NoReturn:
    raise ConfigError(f"{where}: {key or WHOLE} {problem}")


def join(key: str, name: object) -> str:
    if isinstance(name, int):
        return f"{key}[{name}]"
    return f"{key}.{name}" if key else str(name)


def kind(value: object) -> str:
    """A value's type as a reader of the file would name it."""
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    names = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        int: "an integer",
        type(None): "null",
    }
    return names.get(type(value), f"a {type(value).__name__}")


def within_depth(node: Any, where: object, limit: int = MAX_DEPTH) -> None:
    """Refuse mappings and lists nested deeper than ``limit`` (walked without recursion)."""
    stack = [(node, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value
        if not isinstance(value, dict | list | tuple):
            continue
        if depth > limit:
            fail(where, WHOLE, f"nests deeper than {limit} levels")
        stack.extend((child, depth + 1) for child in children)


def read_json(path: Path | str) -> Any:
    """The parsed content of a JSON file advflat wrote, bounded in size and depth."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            fail(path, WHOLE, f"is larger than {MAX_JSON_BYTES // 2**20} MiB")
        data = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        fail(path, WHOLE, f"nests deeper than {MAX_DEPTH} levels")
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        fail(path, WHOLE, f"is not valid JSON ({str(error).splitlines()[0]})")
    except OSError as error:
        fail(path, WHOLE, f"could not be read ({error.strerror or type(error).__name__})")
    within_depth(data, path)
    return data


def mapping(value: Any, where: object, key: str = "") -> dict[str, Any]:
    """``value`` when it is a mapping with string keys."""
    if not isinstance(value, dict):
        fail(where, key, f"must be a mapping, got {kind(value)}")
    for name in value:
        if not isinstance(name, str):
            fail(where, key, f"has a key that is not a string ({name!r})")
    return value


def optional_mapping(value: Any, where: object, key: str) -> dict[str, Any]:
    """A mapping, with null (an absent node) read as an empty one."""
    return {} if value is None else mapping(value, where, key)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def number(
    value: Any,
    where: object,
    key: str,
    low: float = -math.inf,
    high: float = math.inf,
    integer: bool = False,
) -> float:
    """``value`` when it is a number in [low, high] (an integer with ``integer``)."""
    if integer and not (isinstance(value, int) and not isinstance(value, bool)):
        fail(where, key, f"must be an integer, got {kind(value)}")
    if not is_number(value):
        fail(where, key, f"must be a number, got {kind(value)}")
    if not low <= value <= high:
        fail(where, key, f"must lie in [{low:g}, {high:g}], got {value!r}")
    return value


def tensor(
    value: Any,
    where: object,
    key: str,
    shape: list[int] | tuple[int, ...] | torch.Size | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """``value`` when it is a tensor of ``shape`` and ``dtype`` (either unchecked with None)."""
    if not isinstance(value, Tensor):
        fail(where, key, f"must be a tensor, got {kind(value)}")
    if shape is not None and list(value.shape) != list(shape):
        fail(where, key, f"must have shape {list(shape)}, got {list(value.shape)}")
    if dtype is not None and value.dtype != dtype:
        fail(where, key, f"must be a {dtype} tensor, got {value.dtype}")
    return value


def flat_metrics(value: Any, where: object, key: str = "") -> dict[str, Any]:
    """Metrics as advflat writes them: name → number, or null for a value that was not finite."""
    for name, metric in mapping(value, where, key).items():
        if metric is not None:
            number(metric, where, join(key, name))
    return value


def like(stored: Any, reference: Any, where: object, key: str) -> None:
    """``stored`` has the structure of ``reference``: the same keys, list lengths, tensor
    shapes and dtypes, and a value of the same kind in every leaf (an int where a float is
    expected is accepted; a None leaf in ``reference`` accepts any plain value)."""
    if isinstance(reference, Tensor):
        tensor(stored, where, key, reference.shape, reference.dtype)
    elif isinstance(reference, Mapping):
        _like_mapping(stored, reference, where, key)
    elif isinstance(reference, list | tuple):
        if not isinstance(stored, list | tuple) or len(stored) != len(reference):
            fail(where, key, f"must be a list of {len(reference)} entries, got {kind(stored)}")
        for index, (item, value) in enumerate(zip(stored, reference, strict=True)):
            like(item, value, where, join(key, index))
    else:
        _like_leaf(stored, reference, where, key)


def _like_mapping(stored: Any, reference: Mapping, where: object, key: str) -> None:
    if not isinstance(stored, Mapping):
        fail(where, key, f"must be a mapping, got {kind(stored)}")
    missing = [name for name in reference if name not in stored]
    extra = [name for name in stored if name not in reference]
    if missing or extra:
        detail = f"lacks {missing!r}" if missing else f"has unexpected keys {extra!r}"
        fail(where, key, f"{detail} (a file of another version, or edited)")
    for name, value in reference.items():
        like(stored[name], value, where, join(key, name))


def _like_leaf(stored: Any, reference: Any, where: object, key: str) -> None:
    if isinstance(reference, bool):
        if not isinstance(stored, bool):
            fail(where, key, f"must be true or false, got {kind(stored)}")
    elif is_number(reference):
        number(stored, where, key, integer=isinstance(reference, int))
    elif isinstance(reference, str):
        if not isinstance(stored, str):
            fail(where, key, f"must be a string, got {kind(stored)}")
    elif isinstance(stored, dict | list | tuple | Tensor):  # reference None: any plain value
        fail(where, key, f"must be a plain value, got {kind(stored)}")
