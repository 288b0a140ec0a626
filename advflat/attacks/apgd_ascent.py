"""One run of Auto-PGD (Croce & Hein, ICML 2020, Algorithm 1) on a batch.

From a random start x⁰ in box ∩ ball, with step size η = 2ε per example:

    x¹     = P(x⁰ + η·d(∇f(x⁰)))                                (d: sign for L∞, unit L2 for L2)
    z      = P(xᵏ + η·d(∇f(xᵏ)))
    xᵏ⁺¹   = P(xᵏ + α(z − xᵏ) + (1 − α)(xᵏ − xᵏ⁻¹))             (α = ``momentum`` = 0.75)

At each checkpoint w_j (``apgd_checkpoints``) the step size of an example is halved, and its
iterate reset to its best point x_max, when (1) fewer than ρ·(w_j − w_{j−1}) of the steps since
the last checkpoint increased f, or (2) neither η nor the best loss f_max changed since the last
checkpoint. After a reset the momentum term starts from zero (xᵏ⁻¹ = xᵏ = x_max).

An example is finished as soon as an iterate is misclassified (AutoAttack's success criterion):
it leaves the batch, so no further forward passes are spent on it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from advflat.attacks.autoattack_common import misclassified, siblings
from advflat.attacks.base import Objective, input_gradient
from advflat.attacks.norms import NORMS, per_example


def apgd_checkpoints(steps: int) -> list[int]:
    """The iterations w_j = ⌈p_j · steps⌉ at which APGD may halve its step size.

    p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06) (the published rule).
    Every p_j is a multiple of 0.01, so the rule runs on integer hundredths and the ceiling is
    exact (no 0.41·100 = 41.000000001 → 42). Only checkpoints inside the run (0 < w_j < steps)
    are returned, each once.
    """
    previous, current = 0, 22  # p_0 and p_1 in hundredths
    points: list[int] = []
    while current <= 100:
        point = -(-current * steps // 100)  # ⌈current · steps / 100⌉
        if 0 < point < steps and (not points or point > points[-1]):
            points.append(point)
        previous, current = current, current + max(current - previous - 3, 6)
    return points


def apgd_start(x: Tensor, epsilon: float, norm: str) -> Tensor:
    """A random start uniform in the ball (the cube for L∞), projected onto the box."""
    return NORMS[norm].random_start(x, epsilon, "uniform")


@dataclass
class APGDRun:
    """State of the examples still attacked; every tensor has one row per example."""

    index: Tensor  # (A,) rows in the caller's batch
    group: Tensor  # (A,) the example a row attacks (rows of one example leave together)
    x: Tensor  # clean inputs
    y: Tensor  # labels (success = misclassified)
    target: Tensor  # what the loss compares against: labels, or (A, 2) label/target pairs
    current: Tensor  # xᵏ
    previous: Tensor  # xᵏ⁻¹
    loss: Tensor  # f(xᵏ), (A,)
    grad: Tensor  # ∇f(xᵏ)
    eta: Tensor  # step size, (A,)
    best: Tensor  # x_max
    best_loss: Tensor  # f_max, (A,)
    best_grad: Tensor  # ∇f(x_max): a reset needs no extra gradient pass
    increases: Tensor  # steps that increased f since the last checkpoint, (A,)
    eta_checkpoint: Tensor  # η at the last checkpoint, (A,)
    best_loss_checkpoint: Tensor  # f_max at the last checkpoint, (A,)

    def keep(self, rows: Tensor) -> APGDRun:
        return APGDRun(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})


def _evaluate(
    model: nn.Module, x: Tensor, target: Tensor, loss_fn: Objective, need_grad: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    if need_grad:
        return input_gradient(model, x, target, loss_fn)
    with torch.no_grad():  # the last iterate needs no gradient: a forward pass suffices
        logits = model(x)  # (A, K)
        return loss_fn(logits, target), logits, None


def _step(run: APGDRun, first: bool, norm: str, epsilon: float, alpha: float) -> Tensor:
    ball = NORMS[norm]
    z = ball.step_and_project(run.current, run.x, run.grad, per_example(run.eta, run.x), epsilon)
    if first:
        return z
    moved = run.current + alpha * (z - run.current) + (1 - alpha) * (run.current - run.previous)
    return ball.project_onto_threat(moved, run.x, epsilon)


def halve_stalled(run: APGDRun, min_increases: float) -> None:
    """Halve η and restart from x_max where the run stalled (conditions 1 or 2)."""
    stalled = run.increases < min_increases
    unchanged = (run.eta == run.eta_checkpoint) & (run.best_loss == run.best_loss_checkpoint)
    halve = stalled | unchanged
    run.eta_checkpoint, run.best_loss_checkpoint = run.eta, run.best_loss
    run.eta = torch.where(halve, run.eta / 2, run.eta)
    rows = per_example(halve, run.x)
    run.current = torch.where(rows, run.best, run.current)
    run.previous = torch.where(rows, run.best, run.previous)  # no momentum across a reset
    run.grad = torch.where(rows, run.best_grad, run.grad)
    run.loss = torch.where(halve, run.best_loss, run.loss)
    run.increases = torch.zeros_like(run.increases)


def apgd_ascent(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    target: Tensor,
    loss_fn: Objective,
    *,
    epsilon: float,
    norm: str,
    steps: int,
    rho: float,
    momentum: float,
    groups: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One APGD run: (x_adv, loss (B,), broken (B,) bool).

    x_adv is the first misclassified iterate where one was found, else the highest-loss one.
    ``groups`` (B,): rows attacking the same example (APGD-T's targets); once one of them is
    misclassified the others stop too, keeping their best point (they are not broken).
    """
    batch = x.shape[0]
    out_x, out_loss = x.clone(), x.new_full((batch,), float("-inf"))
    broken = torch.zeros(batch, dtype=torch.bool, device=x.device)
    start = apgd_start(x, epsilon, norm)
    loss, logits, grad = input_gradient(model, start, target, loss_fn)
    eta = x.new_full((batch,), 2 * epsilon)
    run = APGDRun(
        index=torch.arange(batch, device=x.device),
        group=torch.arange(batch, device=x.device) if groups is None else groups,
        x=x, y=y, target=target,
        current=start, previous=start, loss=loss, grad=grad, eta=eta,
        best=start, best_loss=loss, best_grad=grad, increases=torch.zeros_like(loss),
        eta_checkpoint=eta, best_loss_checkpoint=loss,
    )  # fmt: skip
    grouped = groups is not None
    run = _finish_broken(run, start, loss, logits, out_x, out_loss, broken, grouped)
    checkpoints, last = set(apgd_checkpoints(steps)), 0
    for k in range(steps):
        if run.index.numel() == 0:
            break
        x_next = _step(run, k == 0, norm, epsilon, momentum)
        loss, logits, step_grad = _evaluate(model, x_next, run.target, loss_fn, k + 1 < steps)
        increased = (loss > run.loss).to(loss.dtype)
        higher = loss > run.best_loss
        run.best = torch.where(per_example(higher, x_next), x_next, run.best)
        run.best_loss = torch.where(higher, loss, run.best_loss)
        run.previous, run.current, run.loss = run.current, x_next, loss
        if step_grad is not None:  # None after the last step: no step follows
            run.grad = step_grad
            run.best_grad = torch.where(per_example(higher, step_grad), step_grad, run.best_grad)
        if k in checkpoints:
            halve_stalled(run, rho * (k - last))
            last = k
        run.increases = run.increases + increased  # step k counts towards the next interval
        run = _finish_broken(run, x_next, loss, logits, out_x, out_loss, broken, grouped)
    out_x[run.index], out_loss[run.index] = run.best, run.best_loss
    return out_x, out_loss, broken


def _finish_broken(
    run: APGDRun,
    iterate: Tensor,
    loss: Tensor,
    logits: Tensor,
    out_x: Tensor,
    out_loss: Tensor,
    broken: Tensor,
    grouped: bool,
) -> APGDRun:
    """Record the rows whose ``iterate`` is misclassified and drop them (and, ``grouped``,
    the other rows of their examples, with their best point so far) from the run."""
    hit = misclassified(logits, run.y)
    if not hit.any():
        return run
    rows = run.index[hit]
    out_x[rows], out_loss[rows], broken[rows] = iterate[hit], loss[hit], True
    if not grouped:
        return run.keep(~hit)
    done = siblings(run.group, hit)
    stopped = done & ~hit
    out_x[run.index[stopped]], out_loss[run.index[stopped]] = (
        run.best[stopped],
        run.best_loss[stopped],
    )
    return run.keep(~done)
