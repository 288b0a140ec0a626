"""Checking a saved AutoAttack state against the evaluation it resumes, before it is used.

A matching fingerprint says the file was written for this model and these inputs, but not that
its contents are intact: robust error comes from the state's mask and counts, so a damaged or
edited file could report errors below 0 or above 100 %, or send the attack to examples that do
not exist. Everything a resume uses is therefore checked against the N examples and the
components: shapes, dtypes, index ranges, the finished components in order, counts in [0, N]
that never grow, adversarial examples inside the threat model, and, with two forward passes,
the model itself — every example counted robust is classified correctly, every example counted
broken is misclassified at its adversarial example. A state that fails is one ConfigError line
naming the file and the key (delete the file to start afresh).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from advflat.attacks.autoattack_common import misclassified
from advflat.attacks.autoattack_state import AutoAttackState
from advflat.attacks.norms import project
from advflat.core.schema import fail, number, tensor

# x_adv is stored as computed (already projected): projecting it again moves it by rounding only.
BALL_TOLERANCE = 1e-5
AFRESH = "; delete it to start afresh"


def check_state(
    state: AutoAttackState,
    path: str | Path,
    model: nn.Module,
    examples: tuple[Tensor, Tensor],
    threat: tuple[float, str],
    components: list[str],
    batch_size: int,
) -> None:
    """Refuse ``state`` unless it is a consistent point of this evaluation of ``examples``
    = (x, y) under ``threat`` = (ε, norm) with these ``components``."""
    x, y = examples
    where = f"AutoAttack state {path}"
    tensor(state.x_adv, where, "x_adv", x.shape, x.dtype)
    tensor(state.robust, where, "robust", [len(x)], torch.bool)
    check_progress(state, where, components)
    check_counts(state, where, len(x))
    projected = project(x, state.x_adv, threat[0], threat[1])
    if not torch.allclose(projected, state.x_adv, rtol=0.0, atol=BALL_TOLERANCE):
        fail(where, "x_adv", f"leaves the threat model (ε = {threat[0]:g}, {threat[1]}){AFRESH}")
    check_against_model(state, where, model, examples, batch_size)


def check_progress(state: AutoAttackState, where: str, components: list[str]) -> None:
    """The finished components are the first ones, in order; the one in progress is the next;
    its pending examples are distinct indices of examples still robust."""
    if state.finished != components[: len(state.finished)]:
        fail(where, "finished", f"must be the first of {components}, got {state.finished}{AFRESH}")
    upcoming = components[len(state.finished)] if len(state.finished) < len(components) else None
    if state.component is not None and state.component != upcoming:
        fail(where, "component", f"must be {upcoming!r} or null, got {state.component!r}{AFRESH}")
    if state.pending is None:
        return
    pending = state.pending
    if state.component is None or pending.dim() != 1 or pending.dtype != torch.long:
        fail(where, "pending", f"must be a 1-D int64 tensor beside a component{AFRESH}")
    if len(pending) and not (
        int(pending.min()) >= 0 and int(pending.max()) < len(state.robust)
        and bool((pending[1:] > pending[:-1]).all()) and bool(state.robust[pending].all())
    ):  # fmt: skip
        fail(where, "pending", f"must be increasing indices of robust examples{AFRESH}")


def check_counts(state: AutoAttackState, where: str, examples: int) -> None:
    """One count for "clean" and each finished component, in [0, N], never increasing, and the
    last one the robust mask's (at least, while a component is in progress)."""
    expected = ["clean", *state.finished]
    if sorted(state.robust_counts) != sorted(expected):
        fail(where, "robust_counts", f"must have the keys {expected}{AFRESH}")
    previous = examples
    for name in expected:
        previous = int(number(state.robust_counts[name], where, f"robust_counts.{name}", 0,
                              previous, integer=True))  # fmt: skip
    robust = int(state.robust.sum())
    if previous < robust or (state.component is None and previous != robust):
        fail(
            where, f"robust_counts.{expected[-1]}", f"must be {robust} (the robust mask's){AFRESH}"
        )


@torch.no_grad()
def check_against_model(
    state: AutoAttackState,
    where: str,
    model: nn.Module,
    examples: tuple[Tensor, Tensor],
    batch_size: int,
) -> None:
    x, y = examples
    correct = torch.cat(
        [~misclassified(model(xb), yb) for xb, yb in zip(x.split(batch_size),
                                                        y.split(batch_size), strict=True)]
    )  # fmt: skip
    if int(correct.sum()) != state.robust_counts["clean"]:
        fail(where, "robust_counts.clean", f"must be {int(correct.sum())} for this model{AFRESH}")
    if bool((state.robust & ~correct).any()):
        fail(where, "robust", f"counts misclassified examples as robust{AFRESH}")
    broken = (correct & ~state.robust).nonzero().squeeze(1)
    for chunk in broken.split(batch_size):
        if not bool(misclassified(model(state.x_adv[chunk]), y[chunk]).all()):
            fail(where, "x_adv", f"does not break every example counted broken{AFRESH}")
