"""The projection FAB needs: the closest point of a hyperplane ∩ box, in L∞ or L2 (pure function).

Problem, per example:  min ||δ||_p  subject to  w·δ = c  and  low <= point + δ <= high.

Flip signs so that c >= 0 (w·δ = c ⇔ (−w)·δ = −c). Moving coordinate i in the direction of w_i
gains |w_i| per unit and can move at most r_i (the room to the box wall in that direction).
The optimum moves every coordinate by step_i(λ) = min(λ·s_i, r_i) for one λ >= 0, with speed
s_i = 1 (L∞, where w_i ≠ 0) or s_i = |w_i| (L2: δ ∝ w until a coordinate hits the box). The gain

    g(λ) = Σ_i |w_i| · min(λ·s_i, r_i)

is piecewise linear and non-decreasing with breakpoints b_i = r_i / s_i, so λ with g(λ) = c is
found exactly by sorting the breakpoints. If even g(∞) < c the plane does not meet the box and
every coordinate moves to its wall (the box point closest to the plane along w).
"""

from __future__ import annotations

import torch
from torch import Tensor

# Breakpoint of coordinates that cannot move (s_i = 0): after every real breakpoint.
_NEVER = 1e30


def _speeds(weights: Tensor, norm: str) -> Tensor:
    speeds = {"linf": lambda a: (a > 0).to(a.dtype), "l2": lambda a: a}
    return speeds[norm](weights)


def project_onto_hyperplane_in_box(
    point: Tensor, w: Tensor, c: Tensor, norm: str, box: tuple[float, float] = (0.0, 1.0)
) -> Tensor:
    """δ (like ``point``) of least L∞/L2 norm with w·δ = c (per example) and point + δ in box.

    ``point`` and ``w`` are (B, ...), ``c`` is (B,).
    """
    shape = point.shape
    p, w = point.flatten(1), w.flatten(1)  # (B, D)
    sign_c = torch.where(c < 0, -1.0, 1.0).to(p.dtype)[:, None]  # (B, 1)
    w = w * sign_c
    need = (c.abs())[:, None]  # (B, 1): the gain w·δ must reach
    weights = w.abs()
    room = torch.where(w > 0, box[1] - p, p - box[0]).clamp_min(0)  # (B, D)
    speed = _speeds(weights, norm)
    breaks = torch.where(speed > 0, room / speed.clamp_min(1e-30), _NEVER)
    order = breaks.argsort(dim=1)
    breaks = breaks.gather(1, order)
    full = (weights * room).gather(1, order)  # gain of a saturated coordinate
    slope = (weights * speed).gather(1, order)  # gain per unit λ of an unsaturated one
    before = full.cumsum(1) - full  # saturated gain of the coordinates before k
    after = slope.flip(1).cumsum(1).flip(1)  # slope of coordinates k, k+1, ...
    gain_at_break = before + breaks * after  # g(b_k), non-decreasing in k
    k = (gain_at_break < need).sum(1, keepdim=True)  # first breakpoint reaching c (B, 1)
    feasible = k < p.shape[1]
    k = k.clamp(max=p.shape[1] - 1)
    lam = (need - before.gather(1, k)) / after.gather(1, k).clamp_min(1e-30)
    lam = torch.where(feasible, lam.clamp_min(0), torch.inf)
    step = torch.where(speed > 0, torch.minimum(lam * speed, room), 0.0)
    return (torch.sign(w) * step).view(shape)
