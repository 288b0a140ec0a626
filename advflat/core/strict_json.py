"""Strict JSON for advflat's files: no NaN or Infinity, which only some parsers accept.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which JavaScript, jq and most
other JSON readers refuse. advflat writes ``null`` in their place; a metrics file also records
which keys were not finite, as ``diagnostics/non_finite/<key>: 1``, so a diverged run's table
says why a value is missing instead of showing a silent gap.
"""

from __future__ import annotations

import math
from typing import Any

NON_FINITE = "diagnostics/non_finite/"


def finite(data: Any) -> Any:
    """``data`` with every non-finite float (at any depth) replaced by None."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [finite(value) for value in data]
    return data


def metrics_for_json(metrics: dict[str, Any]) -> dict[str, Any]:
    """Flat metrics as written: non-finite values null, each named by a diagnostics entry."""
    written: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            written[key] = None
            written[f"{NON_FINITE}{key}"] = 1
        else:
            written[key] = value
    return written
