"""The one weight ascent: projected gradient ascent on ν in B_ξ(w) with layer-wise relative
normalization (docs/flatness.md#the-relative-ball).

Every step takes a gradient at w + ν_t, rescales it group by group to g_g·||w_g||/||g_g|| (so a
step of size lr moves every group by lr times its own weight norm) and projects
ν_t + lr·that back onto the ball. Worst-case clean flatness (``AdversarialWeightAttack``), the
joint weight+input attack (``JointWeightInputAttack``) and AWP training
(``trainer/update=awp``) all run ``ascend``; what differs between them is an argument:

- the start: ``start(ball, sampler, project=..., broadcast=...)`` (AWP projects ν₀ and takes
  rank 0's draw; the evaluation attacks use the sampler's draw as it is);
- which batches each gradient is taken on: ``schedule(..., per_batch=...)`` (one step per pass
  over the whole set, or one step after every batch);
- which iterate is returned: ``iterate="best"`` (highest measured objective, the last iterate
  included; one host read per step) or ``"last"`` (no host read);
- ``average``: a collective applied to every gradient before it is used (AWP's mean over the
  ranks of a multi-process job; a no-op by default).

What the gradient is of — and anything that moves along with ν (the joint attack's inputs) — is
the caller's ``probe``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from advflat.core import checks
from advflat.weights.ball import RelativeBall
from advflat.weights.samplers import SAMPLERS

ITERATES = ("best", "last")

# In place on a list of tensors (the training context's ``average_`` / ``broadcast_``).
Collective = Callable[[list[Tensor]], None]


def unchanged(tensors: list[Tensor]) -> None:
    """The collective of a single process: nothing to exchange."""


@dataclass(eq=False)
class Probe:
    """What ``probe(batches, ν)`` measured at w + ν on the given batch indices: the mean
    objective (a device tensor, read only for ``iterate="best"``), its gradient w.r.t. the
    selected parameters, and ``state``: what belongs with this ν (kept with the best iterate)."""

    loss: Tensor
    gradients: list[Tensor]
    state: Any = None


@dataclass(eq=False)
class Ascended:
    """The returned ν, its measured objective (None for ``iterate="last"``) and its state."""

    nu: list[Tensor]
    loss: float | None = None
    state: Any = None


ProbeAt = Callable[[range, list[Tensor]], Probe]
# ν -> (mean objective at w + ν, state): the last iterate's value for ``iterate="best"``.
Evaluate = Callable[[list[Tensor]], tuple[Tensor, Any]]


def start(
    ball: RelativeBall, sampler: str, *, project: bool, broadcast: Collective = unchanged
) -> list[Tensor]:
    """ν₀ drawn by ``sampler`` (a key of ``SAMPLERS``), projected onto the ball if asked, then
    ``broadcast`` (rank 0's draw on every rank in a multi-process job)."""
    nu = SAMPLERS[checks.one_of("sampler", sampler, SAMPLERS)](ball)
    if project:
        nu = ball.project(nu)
    broadcast(nu)
    return nu


def schedule(batches: int, passes: int, *, per_batch: bool) -> list[range]:
    """The batch indices of every step's gradient: ``passes`` full-set steps, or one step per
    batch for ``passes`` passes over the ``batches`` batches."""
    checks.at_least("batches", batches, 1)
    checks.at_least("passes", passes, 0)
    if per_batch:
        return [range(b, b + 1) for _ in range(passes) for b in range(batches)]
    return [range(batches)] * passes


def normalized_step(
    ball: RelativeBall, nu: list[Tensor], gradients: list[Tensor], lr: float
) -> list[Tensor]:
    """Proj_B(ν + lr·normalize(∇)): one ascent step."""
    direction = ball.normalize_gradient(gradients)
    return ball.project([v + lr * g for v, g in zip(nu, direction, strict=True)])


def ascend(
    nu: list[Tensor],
    probe: ProbeAt,
    *,
    ball: RelativeBall,
    lr: float,
    steps: Sequence[range],
    iterate: str,
    evaluate: Evaluate | None = None,
    average: Collective = unchanged,
) -> Ascended:
    """Run one ascent step per entry of ``steps`` (see the module docstring) from ``nu``.

    ``iterate="best"`` needs ``evaluate`` for the last iterate, which no step measured; it
    returns the best of ν₀ … ν_T, so the result never measures below its start.
    """
    checks.one_of("iterate", iterate, ITERATES)
    if iterate == "best" and evaluate is None:
        raise ValueError("evaluate is required for iterate='best' (the last iterate's value)")
    best, best_value = Ascended(nu), float("-inf")
    for batches in steps:
        measured = probe(batches, nu)
        if iterate == "best":
            value = measured.loss.item()  # one sync per step, only for the best iterate
            if value > best_value:
                best, best_value = Ascended(nu, value, measured.state), value
        average(measured.gradients)
        nu = normalized_step(ball, nu, measured.gradients, lr)
    if iterate == "last" or evaluate is None:
        return Ascended(nu)
    final, state = evaluate(nu)
    value = final.item()
    return Ascended(nu, value, state) if value > best_value else best
