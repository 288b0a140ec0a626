"""The input check every attack and measure runs once per call: x a batch of images in [0, 1]
(advflat's pixel scale), y its class labels.

Attacks project into the box [0, 1]: given images on another scale ([0, 255], [−1, 1]) they
would silently return points far outside the ε-ball of x, and NaN inputs give NaN results.
``check_inputs`` turns both into a one-line ValueError naming the entry point, what was wrong
and what is expected.

Cost. The structural checks (types, dtypes, shapes, devices) read metadata only. The value
checks are one ``aminmax`` reduction per tensor (NaN propagates through it, so one reduction
covers "finite" and "inside the box"), folded into ONE boolean on x's device and read back ONCE
per call, never per attack step:

- on the CPU the read-back (``bool(ok)``) costs nothing (there is no device queue to drain), and
  the failure message can report the offending values;
- on CUDA the same single read-back per call is a host sync, negligible for an evaluation call
  that runs tens of forward/backward passes. Inside ``without_sync()`` (a training loop calling
  an attack once per batch) the check is ``torch._assert_async`` instead: no host sync at all; a
  failure stops the run at its next synchronisation with a device-side assert that carries the
  message.

Nested calls do not check again: an entry point checks once, then runs its inner work inside
``checked()``, so AutoAttack's components, the attacks a flatness measure reruns per batch and
the per-step work of every attack add nothing.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

TOLERANCE = 1e-6  # images written as float16, or resized, may overshoot [0, 1] by rounding
PIXEL_SCALE = "advflat's pixel scale; divide uint8 images by 255"

# "sync": check, read the result back (default); "async": on CUDA assert on the device without
# a host sync; "skip": an enclosing entry point has checked these inputs already.
_MODE: ContextVar[str] = ContextVar("advflat_input_checks", default="sync")

Function = TypeVar("Function", bound=Callable[..., Any])


@contextlib.contextmanager
def _mode(mode: str) -> Iterator[None]:
    token = _MODE.set(mode)
    try:
        yield
    finally:
        _MODE.reset(token)


def checked() -> contextlib.AbstractContextManager[None]:
    """Inside, inputs count as checked: nested attacks and measures skip their check."""
    return _mode("skip")


def without_sync() -> contextlib.AbstractContextManager[None]:
    """Inside, CUDA checks are device-side assertions (no host sync): for training loops.

    On the CPU the check still raises a ValueError (a read-back is free there). An enclosing
    ``checked()`` stays in force.
    """
    return _mode("skip" if _MODE.get() == "skip" else "async")


def num_classes(model: nn.Module) -> int | None:
    """K from the model's ``num_classes`` (also through a DDP or ``torch.compile`` wrapper)."""
    for candidate in (model, getattr(model, "module", None), getattr(model, "_orig_mod", None)):
        classes = getattr(candidate, "num_classes", None)
        if isinstance(classes, int) and not isinstance(classes, bool):
            return classes
    return None


def _shape(tensor: Tensor) -> str:
    return f"({', '.join(str(s) for s in tensor.shape)}{',' if tensor.dim() == 1 else ''})"


def check_structure(who: str, x: Any, y: Any, *, labels: bool = True) -> None:
    """Types, dtypes, shapes and devices: metadata only, no device work.

    With ``labels`` False, y is an opaque attack target (clean probabilities for TRADES, ...):
    only its batch size is checked.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{who}: x must be a floating-point tensor in [0, 1] ({PIXEL_SCALE}), "
                         f"got {got}")  # fmt: skip
    if x.dim() < 2:
        raise ValueError(f"{who}: x must be a batch (B, C, H, W), got shape {_shape(x)}")
    if not isinstance(y, Tensor):
        raise ValueError(f"{who}: y must be a tensor of class indices, got {type(y).__name__}")
    if y.dim() >= 1 and y.shape[0] != x.shape[0]:
        raise ValueError(
            f"{who}: x and y must have the same batch size, got {x.shape[0]} and {y.shape[0]}"
        )
    if y.device != x.device:
        raise ValueError(f"{who}: x and y must be on one device, got {x.device} and {y.device}")
    if not labels:
        return
    if y.dtype != torch.long:
        raise ValueError(
            f"{who}: y must be an integer (torch.long) tensor of class indices, got {y.dtype}"
        )
    if y.dim() != 1:
        raise ValueError(
            f"{who}: y must have shape (B,) = ({x.shape[0]},), one label per image, got {_shape(y)}"
        )


def values_ok(x: Tensor, y: Tensor | None, classes: int | None) -> Tensor:
    """One boolean on x's device: x finite and in the box, y (if given) in [0, K)."""
    if x.numel() == 0:
        ok = torch.ones((), dtype=torch.bool, device=x.device)
    else:
        low, high = torch.aminmax(x.detach())  # NaN propagates: the comparisons are then False
        ok = (low >= -TOLERANCE) & (high <= 1 + TOLERANCE)
    if y is not None and y.numel() > 0:
        low_y, high_y = torch.aminmax(y)
        ok = ok & (low_y >= 0)
        if classes is not None:
            ok = ok & (high_y < classes)
    return ok


def describe(who: str, x: Tensor, y: Tensor | None, classes: int | None) -> str:
    """What is wrong with inputs that failed ``values_ok`` (reads values: failures only)."""
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        nan, inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
        return f"{who}: x must be finite, got {nan} NaN and {inf} infinite values"
    low, high = (float(v) for v in torch.aminmax(x))
    if low < -TOLERANCE or high > 1 + TOLERANCE:
        return f"{who}: x must lie in [0, 1] ({PIXEL_SCALE}), got values in [{low:.3f}, {high:.3f}]"
    if y is None:
        return f"{who}: invalid inputs"  # unreachable: x passed, and there are no labels
    low_y, high_y = (int(v) for v in torch.aminmax(y))
    if classes is None:
        return f"{who}: y must hold class indices >= 0, got values in [{low_y}, {high_y}]"
    return (
        f"{who}: y must hold class indices in [0, {classes - 1}] (the model has {classes} "
        f"classes), got values in [{low_y}, {high_y}]"
    )


def _settle(who: str, ok: Tensor, failure: Callable[[], str]) -> None:
    """Raise ``failure()`` unless ``ok``: read back once, or assert on the device (see top)."""
    if _MODE.get() == "async" and ok.device.type == "cuda":
        torch._assert_async(ok, f"{who}: x must be finite and in [0, 1], y in [0, K)")
        return
    if not bool(ok):
        raise ValueError(failure())


def check_inputs(who: str, model: nn.Module, x: Tensor, y: Tensor, *, labels: bool = True) -> None:
    """Check one batch (x (B, ...) in [0, 1], y (B,) labels in [0, K)); see the module doc.

    ``who`` starts the message ("PGD", "flatness"); ``labels`` False treats y as an opaque
    target of a custom objective.
    """
    if _MODE.get() == "skip":
        return
    check_structure(who, x, y, labels=labels)
    target = y if labels else None
    classes = num_classes(model) if labels else None
    ok = values_ok(x, target, classes)
    _settle(who, ok, lambda: describe(who, x, target, classes))


def check_batches(who: str, model: nn.Module, batches: Sequence[tuple[Tensor, Tensor]]) -> None:
    """Check every (x, y) batch of a set with one read-back for all of them."""
    if _MODE.get() == "skip":
        return
    classes = num_classes(model)
    for x, y in batches:
        check_structure(who, x, y)
    flags = [values_ok(x, y, classes) for x, y in batches]
    if not flags:
        return
    ok = torch.stack([flag.to(flags[0].device) for flag in flags]).all()

    def failure() -> str:
        for i, ((x, y), flag) in enumerate(zip(batches, flags, strict=True)):
            if not bool(flag):
                return describe(f"{who} (batch {i})", x, y, classes)
        return f"{who}: invalid inputs"  # unreachable: some flag was False

    _settle(who, ok, failure)


def validates_inputs(who: str) -> Callable[[Function], Function]:
    """Decorate an entry point with parameters ``model`` and ``x``, ``y`` or ``batches``:
    check them once, then run the entry point inside ``checked()``."""

    def decorate(function: Function) -> Function:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def entry(*args: Any, **kwargs: Any) -> Any:
            arguments = signature.bind(*args, **kwargs).arguments
            if "batches" in arguments:
                check_batches(who, arguments["model"], arguments["batches"])
            else:
                check_inputs(who, arguments["model"], arguments["x"], arguments["y"])
            with checked():
                return function(*args, **kwargs)

        return entry  # type: ignore[return-value]

    return decorate
