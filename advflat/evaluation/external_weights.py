"""The weights of a model advflat did not train, read from a ``.pt`` file into its architecture.

The file is unpickled with ``torch.load(weights_only=True)`` (``advflat.core.loading``): tensors
and plain containers only, so it can hold no code and names nothing to import; the architecture
comes from the command line (``advflat.models.factory``). Accepted layouts: a plain state_dict
(parameter name → tensor), or one under a ``state_dict`` or ``model`` entry (what training
scripts commonly save; an advflat checkpoint keeps its model's state under ``model``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from advflat.core.errors import ConfigError, first_line
from advflat.core.loading import load_torch
from advflat.core.schema import kind, tensor, within_depth

WHAT = "weights file"
ENTRIES = ("state_dict", "model")  # where common layouts keep the state_dict, in this order
SHOWN = 3  # keys named in a mismatch message


def read_weights(path: Path) -> dict[str, Tensor]:
    """The state_dict in ``path``, every entry checked to be a tensor."""
    loaded = load_torch(path, WHAT)
    where = f"{WHAT} {path}"
    within_depth(loaded, where)
    state = _state_dict(loaded)
    if state is None:
        raise ConfigError(
            f"{where} holds no state_dict (expected parameter name → tensor, or one under "
            f"{' or '.join(repr(entry) for entry in ENTRIES)}), got {kind(loaded)}"
        )
    return {str(name): tensor(value, where, str(name)) for name, value in state.items()}


def _state_dict(loaded: Any) -> dict[str, Any] | None:
    if not isinstance(loaded, dict) or not loaded:
        return None
    if all(isinstance(value, Tensor) for value in loaded.values()):
        return loaded
    for entry in ENTRIES:
        if isinstance(loaded.get(entry), dict):
            return loaded[entry]
    return None


def load_into(model: nn.Module, weights: dict[str, Tensor], path: Path, source: str) -> None:
    """``model.load_state_dict(weights)`` after comparing the keys; a mismatch is one line
    naming a few missing and unexpected keys."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in weights]
    unexpected = [key for key in weights if key not in expected]
    if missing or unexpected:
        raise ConfigError(
            f"{WHAT} {path} does not fit --model {source}: {_few('missing', missing)}; "
            f"{_few('unexpected', unexpected)}"
        )
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else first_line(error)
        raise ConfigError(f"{WHAT} {path} does not fit --model {source}: {detail}") from None


def _few(what: str, keys: list[str]) -> str:
    if not keys:
        return f"no {what} keys"
    more = f", … ({len(keys)} in all)" if len(keys) > SHOWN else ""
    return f"{what} keys {', '.join(keys[:SHOWN])}{more}"
