"""Square's per-query draws are looked up from tables rather than computed afresh each query;
the windows and proposals must be exactly those of the direct computation from the same
random draws, so a seeded search ends bitwise as before."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from advflat.attacks.norms import per_example
from advflat.attacks.square_search import linf_proposal, random_signs, window


def direct_window(batch: int, height: int, width: int, side: int) -> Tensor:
    """The window by comparing every row and column with the drawn corner."""
    top = torch.randint(0, height - side + 1, (batch, 1))
    left = torch.randint(0, width - side + 1, (batch, 1))
    rows, cols = torch.arange(height)[None], torch.arange(width)[None]
    in_rows = (rows >= top) & (rows < top + side)
    in_cols = (cols >= left) & (cols < left + side)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def direct_proposal(x: Tensor, best: Tensor, side: int, epsilon: float) -> Tensor:
    """Draw ±ε per channel into the window; redraw (up to 10 draws in all) where nothing
    changed, recomputing the whole candidate each time."""
    batch, channels, height, width = x.shape
    mask = direct_window(batch, height, width, side)
    candidate = best
    pending = torch.ones(batch, dtype=torch.bool)
    for _ in range(10):
        signs = random_signs((batch, channels, 1, 1), x)
        drawn = torch.where(mask, (x + epsilon * signs).clamp(0, 1), best)
        candidate = torch.where(per_example(pending, x), drawn, candidate)
        pending = (candidate - best).flatten(1).abs().amax(1) < 1e-7
        if not pending.any():
            break
    return candidate


@pytest.mark.parametrize(("height", "width", "side"), [(8, 8, 7), (8, 6, 3), (5, 9, 1)])
def test_window_equals_the_direct_comparison_from_the_same_draw(height, width, side):
    torch.manual_seed(0)
    expected = direct_window(64, height, width, side)
    torch.manual_seed(0)
    mask = window(64, height, width, side, torch.device("cpu"))
    assert mask.shape == (64, 1, height, width)
    assert torch.equal(mask, expected)
    assert (mask.flatten(1).sum(1) == side * side).all()


@pytest.mark.parametrize("channels", [1, 3])
def test_linf_proposal_equals_the_direct_redraw_loop_from_the_same_draws(channels):
    torch.manual_seed(2)
    # Half the pixels at 0 (x − ε clamps back to x) and a best point already at x ± ε: many
    # first draws change nothing, so the redraws are exercised.
    x = torch.rand(32, channels, 6, 6) * (torch.rand(32, 1, 6, 6) < 0.5)
    best = (x + 0.1 * random_signs((32, channels, 1, 1), x)).clamp(0, 1)
    for side in (5, 2):
        state = torch.get_rng_state()
        expected = direct_proposal(x, best, side, 0.1)
        after_direct = torch.get_rng_state()
        torch.set_rng_state(state)
        assert torch.equal(linf_proposal(x, best, side, 0.1), expected)
        assert torch.equal(torch.get_rng_state(), after_direct)  # the same draws were used
