"""advflat: adversarial training and robust flatness (Stutz, Hein, Schiele, ICCV 2021)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_model(path: str | Path, device: Any = "cpu") -> Any:
    """Rebuild the model stored in an advflat checkpoint (eval mode), architecture unknown.

    Safe on files from elsewhere: the file is unpickled with ``weights_only=True`` and its model
    config may only name one of advflat's model classes with plain arguments, so a checkpoint
    cannot run code or touch files; anything else is a one-line ``ConfigError``. Imported
    lazily so that ``import advflat`` stays cheap for the CLI tools.
    """
    from advflat.training.checkpoint import load_model as load

    return load(path, device)


__all__ = ["load_model"]
