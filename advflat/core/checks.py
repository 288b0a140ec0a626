"""Argument checks for constructors: each raises ValueError whose message starts with the name.

The build helper prefixes the config path, so `PGD(epsilon=-1)` built from `attack` reads
``attack.epsilon must be > 0, got -1.0``. Every helper checks the type first, so a value of the
wrong kind (``trainer.epochs=abc`` on the command line) reads
``trainer.epochs must be an integer, got 'abc'`` instead of a failed comparison. A number is
finite: no option of advflat means anything at ``inf`` or ``nan`` (``attack.epsilon=inf`` would
make every attack unbounded and every step a jump to a corner of the image cube).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from numbers import Integral, Real
from typing import Any, TypeVar

# at_least returns what it was given: an int for counts, a float for real-valued bounds.
Count = TypeVar("Count", int, float)


def number(name: str, value: Any) -> float:
    """A finite real number (int or float; bool is not a number here, nor is inf or nan)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value  # type: ignore[return-value]


def integer(name: str, value: Any) -> int:
    """An integer (a float such as 10.0 or 1e3 is not: counts come from YAML as written)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return value  # type: ignore[return-value]


def flag(name: str, value: Any) -> bool:
    """A switch: true or false (YAML's 0 and 1 are integers, not switches)."""
    if value is True or value is False:
        return value
    raise ValueError(f"{name} must be true or false, got {value!r}")


def positive(name: str, value: float) -> float:
    number(name, value)
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def non_negative(name: str, value: float) -> float:
    number(name, value)
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def at_least(name: str, value: Count, minimum: float) -> Count:
    """value >= minimum; an integer minimum asks for an integer, a float one for any number."""
    if isinstance(minimum, Integral):
        integer(name, value)
    else:
        number(name, value)
    if not value >= minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def in_range(name: str, value: float, low: float, high: float, *, low_open: bool = False) -> float:
    """Check low <= value <= high (or low < value with low_open)."""
    number(name, value)
    ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value!r}")
    return value


def one_of(name: str, value: Any, allowed: Collection[Any]) -> Any:
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value
