"""Square Attack's pieces: the p schedule, windows, L∞/L2 proposals and the random search.

See ``advflat.attacks.square`` for the method. Everything here draws from torch's global RNG
(AutoAttack seeds it per batch).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn

from advflat.attacks.autoattack_common import misclassified
from advflat.attacks.norms import NORMS, per_example, project_box

# Iterations (of a 10 000-query run) after which the square fraction p is halved.
HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(p_init: float, iteration: int, queries: int, rescale: bool) -> float:
    """p at ``iteration``: p_init halved after each of ``HALVINGS`` passed.

    With ``rescale`` the schedule is stretched to the budget (iteration i of ``queries`` counts
    as i·10000/queries); without it the iterations are taken as they are (AutoAttack's setting
    for its 5000-query Square, which then never reaches the last halvings).
    """
    at = int(iteration / queries * 10000) if rescale else iteration
    return p_init / 2 ** sum(at > boundary for boundary in HALVINGS)


def square_side(p: float, height: int, width: int) -> int:
    """Side of a square covering a fraction p of the pixels: round(sqrt(p·H·W)), in [1, min−1]."""
    side = max(round(math.sqrt(p * height * width)), 1)
    return min(side, max(min(height, width) - 1, 1))


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """z_y − max_{k≠y} z_k per example (B,): negative means misclassified; Square minimises it."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return z_y - others.amax(dim=1)


def window(batch: int, height: int, width: int, side: int, device) -> Tensor:
    """A random side×side window per example: a (B, 1, H, W) bool mask."""
    top = torch.randint(0, height - side + 1, (batch, 1), device=device)
    left = torch.randint(0, width - side + 1, (batch, 1), device=device)
    in_rows, in_cols = _spans(height, side, device), _spans(width, side, device)
    return (in_rows[top[:, 0], :, None] & in_cols[left[:, 0], None, :])[:, None]


@functools.lru_cache(maxsize=64)
def _spans(length: int, side: int, device) -> Tensor:
    """(length − side + 1, length) bool: row s marks the positions s .. s + side − 1.

    Looked up per draw instead of compared afresh: the search draws a window per query."""
    starts = torch.arange(length - side + 1, device=device)[:, None]
    positions = torch.arange(length, device=device)[None]
    return (positions >= starts) & (positions < starts + side)


def random_signs(shape: tuple[int, ...], like: Tensor) -> Tensor:
    return torch.randint(0, 2, shape, device=like.device).to(like.dtype) * 2 - 1


def linf_init(x: Tensor, epsilon: float) -> Tensor:
    """Vertical stripes: ±ε constant along each column, per channel."""
    batch, channels, _, width = x.shape
    return (x + epsilon * random_signs((batch, channels, 1, width), x)).clamp(0, 1)


def linf_proposal(x: Tensor, best: Tensor, side: int, epsilon: float) -> Tensor:
    """Set one random window to ±ε per channel (resampled where that would change nothing).

    Both values a window can take, x − ε and x + ε (boxed), are computed once; a redraw then
    only picks signs (B, C), and whether a pick changes anything is looked up per channel."""
    batch, channels, height, width = x.shape
    mask = window(batch, height, width, side, x.device)
    shift = torch.tensor([-epsilon, epsilon], dtype=x.dtype, device=x.device)
    values = (x + shift.view(2, 1, 1, 1, 1)).clamp(0, 1)  # (2, B, C, H, W): sign 0 is −ε
    change = torch.where(mask, (values - best).abs(), 0.0).amax((3, 4))  # (2, B, C)
    unchanged = (change < 1e-7).permute(1, 2, 0)  # (B, C, 2): this sign leaves best as it is
    signs = _draw_signs(batch, channels, x)  # (B, C, 1)
    for _ in range(9):  # a change is almost always drawn at once; 10 draws bound the loop
        pending = unchanged.gather(2, signs).all(1)  # (B, 1): no channel would change
        if not pending.any():
            break
        signs = torch.where(pending[:, :, None], _draw_signs(batch, channels, x), signs)
    picked = signs.bool()[:, :, :, None]  # (B, C, 1, 1): + where true
    return torch.where(mask, torch.where(picked, values[1], values[0]), best)


def _draw_signs(batch: int, channels: int, like: Tensor) -> Tensor:
    """0 (−ε) or 1 (+ε) per example and channel, (B, C, 1): ``random_signs``' draw."""
    return torch.randint(0, 2, (batch, channels, 1, 1), device=like.device)[:, :, :, 0]


def l2_pattern(side: int, like: Tensor) -> Tensor:
    """A side×side bump of nested squares (weight 1/(k+1)² for ring k), unit L2 norm."""
    centre = (side - 1) / 2
    grid = torch.arange(side, device=like.device, dtype=like.dtype)
    ring = torch.maximum((grid[:, None] - centre).abs(), (grid[None, :] - centre).abs()).floor()
    levels = torch.arange(side // 2 + 1, device=like.device, dtype=like.dtype)
    # each ring k adds 1/(k+1)^2 inside itself: the centre collects the most
    bump = ((ring[None] <= levels[:, None, None]) / (levels[:, None, None] + 1) ** 2).sum(0)
    return bump / bump.norm()


def place(pattern: Tensor, mask: Tensor) -> Tensor:
    """Copy a side×side pattern into each example's window mask (B, 1, H, W)."""
    side = pattern.shape[0]
    rows = mask.any(dim=3).float().argmax(dim=2)  # (B, 1): first row of the window
    cols = mask.any(dim=2).float().argmax(dim=2)  # (B, 1): first column
    height, width = mask.shape[2:]
    r = (torch.arange(height, device=mask.device)[None] - rows).clamp(0, side - 1)  # (B, H)
    c = (torch.arange(width, device=mask.device)[None] - cols).clamp(0, side - 1)  # (B, W)
    return pattern[r[:, :, None], c[:, None, :]][:, None] * mask


def l2_init(x: Tensor, epsilon: float) -> Tensor:
    """A grid of bumps with random signs per channel, rescaled to norm ε, then boxed."""
    batch, channels, height, width = x.shape
    tile = max(min(height, width) // 4, 1)
    pattern = l2_pattern(tile, x)
    delta = torch.zeros_like(x)
    for top in range(0, height - tile + 1, tile):
        for left in range(0, width - tile + 1, tile):
            signs = random_signs((batch, channels, 1, 1), x)
            delta[:, :, top : top + tile, left : left + tile] = signs * pattern
    delta = delta * epsilon / per_example(NORMS["l2"](delta).clamp_min(1e-12), x)
    return (x + delta).clamp(0, 1)


def l2_proposal(x: Tensor, best: Tensor, side: int, epsilon: float) -> Tensor:
    """Move the mass of a second window (and any unused budget) into a new bump in the first.

    Per channel: new δ on window 1 = δ₁ + a·(±bump) with a chosen so that its squared norm is
    ||δ₁||² + ||δ₂||² + spare (spare = (ε² − ||δ||²)/C); δ on window 2 becomes 0. The total norm
    is kept at ε (a simplified form of the published L2 update).
    """
    batch, channels, height, width = x.shape
    delta = best - x
    first = window(batch, height, width, side, x.device)
    second = window(batch, height, width, side, x.device) & ~first
    bump = place(l2_pattern(side, x), first) * random_signs((batch, channels, 1, 1), x)
    moved = (delta**2 * second).sum((2, 3))  # (B, C)
    spare = (epsilon**2 - (delta**2).flatten(1).sum(1)).clamp_min(0) / channels  # (B,)
    overlap = (delta * bump).sum((2, 3))  # (B, C); ||bump|| = 1 per channel
    scale = -overlap + (overlap**2 + moved + spare[:, None]).sqrt()  # root of ||δ₁ + a·b||²
    delta = torch.where(second, 0.0, delta) + scale[:, :, None, None] * bump
    return project_box(x + NORMS["l2"].project(delta, epsilon))


INIT = {"linf": linf_init, "l2": l2_init}
PROPOSAL = {"linf": linf_proposal, "l2": l2_proposal}


def square_search(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    epsilon: float,
    norm: str,
    queries: int,
    p_init: float,
    rescale: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """At most ``queries`` model calls: (x_adv, margin (B,), broken (B,)).

    One call for the start, then one per iteration on the rows not yet misclassified; a proposal
    is accepted when it lowers the margin.
    """
    height, width = x.shape[2:]
    best = INIT[norm](x, epsilon)
    logits = model(best)  # (B, K): query 1
    best_margin = margin(logits, y)
    out_x, out_margin = best.clone(), best_margin.clone()
    broken = misclassified(logits, y)
    active = (~broken).nonzero().squeeze(1)
    xa, ya, best, best_margin = x[active], y[active], best[active], best_margin[active]
    for iteration in range(1, queries):
        if len(active) == 0:
            break
        side = square_side(square_fraction(p_init, iteration, queries, rescale), height, width)
        candidate = PROPOSAL[norm](xa, best, side, epsilon)
        logits = model(candidate)  # (A, K): one query per remaining example
        new_margin = margin(logits, ya)
        better = new_margin < best_margin
        best = torch.where(per_example(better, best), candidate, best)
        best_margin = torch.where(better, new_margin, best_margin)
        done = better & misclassified(logits, ya)
        if done.any():  # rows leave rarely: only then are they written out and dropped
            finished = active[done]
            out_x[finished], out_margin[finished] = best[done], best_margin[done]
            broken[finished] = True
            keep = ~done
            active, xa, ya, best, best_margin = (
                t[keep] for t in (active, xa, ya, best, best_margin)
            )  # fmt: skip
    out_x[active], out_margin[active] = best, best_margin
    return out_x, out_margin, broken
