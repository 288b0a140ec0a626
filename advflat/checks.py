"""Argument checks for constructors: each raises ValueError whose message starts with the name.

The build helper prefixes the config path, so `PGD(epsilon=-1)` built from `attack` reads
``attack.epsilon must be > 0, got -1.0``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any


def positive(name: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def non_negative(name: str, value: float) -> float:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def at_least(name: str, value: int, minimum: int) -> int:
    if not value >= minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def in_range(name: str, value: float, low: float, high: float, *, low_open: bool = False) -> float:
    """Check low <= value <= high (or low < value with low_open)."""
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
