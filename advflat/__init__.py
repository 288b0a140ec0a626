"""advflat: adversarial training and robust flatness (Stutz, Hein, Schiele, ICCV 2021)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def load_model(path: str | Path, device: Any = "cpu", trusted: Any = None) -> Any:
    """Rebuild the model stored in an advflat checkpoint (eval mode), architecture unknown.

    Safe on files from elsewhere: the file is unpickled with ``weights_only=True`` and its model
    config may only name one of advflat's model classes with plain arguments, or ``trusted``, a
    model class of your own that you pass (``load_model(path, trusted=MyNet)``), so a checkpoint
    cannot run code or touch files; anything else is a one-line ``ConfigError``. Imported
    lazily so that ``import advflat`` stays cheap for the CLI tools.
    """
    from advflat.training.checkpoint import load_model as load

    return load(path, device, trusted)


def evaluate(
    model: Any,
    data: Any,
    evaluation: str = "paper",
    *,
    overrides: Sequence[str] = (),
    files_to: str | Path | None = None,
) -> dict[str, float]:
    """The metrics of an advflat evaluation (``conf/evaluation``: paper, quick, study) for any
    classifier taking images (B, C, H, W) in [0, 1] to logits, with the keys and seeding of a
    run's ``metrics.json``: ``advflat.evaluate(model.eval(), (x_test, y_test), "quick")``.

    See ``advflat.evaluation.external.evaluate`` for the forms of ``data`` and ``overrides``.
    Imported lazily, like ``load_model``.
    """
    from advflat.evaluation.external import evaluate as run

    return run(model, data, evaluation, overrides=overrides, files_to=files_to)


__all__ = ["evaluate", "load_model"]
