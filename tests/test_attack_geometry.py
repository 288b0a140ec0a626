"""Known answers for the input-attack geometry: per-example broadcasting, projection onto
box ∩ ball(x, ε), step-and-project and random starts (advflat.attacks.norms)."""

import pytest
import torch

from advflat.attacks.norms import INITS, NORMS, per_example, project

NORM_NAMES = sorted(NORMS)
INIT_NAMES = sorted(INITS)


@pytest.mark.parametrize(
    ("like_shape", "expected"), [((3, 2, 4, 4), (3, 1, 1, 1)), ((3, 5), (3, 1)), ((3,), (3,))]
)
def test_per_example_reshapes_b_values_to_broadcast_against_like(like_shape, expected):
    values = torch.tensor([1.0, 2.0, 3.0])
    shaped = per_example(values, torch.zeros(like_shape))
    assert shaped.shape == expected
    assert torch.equal(shaped.flatten(), values)
    assert torch.equal((shaped * torch.ones(like_shape))[1], torch.full(like_shape[1:], 2.0))


def test_linf_step_and_project_takes_the_signed_step_then_clips_to_ball_and_box():
    # Powers of two: every value is exact in float32, so the answer is bitwise.
    x = torch.tensor([[0.5, 0.5, 0.9375, 0.0625]])
    gradient = torch.tensor([[3.0, -2.0, 1.0, 0.0]])
    out = NORMS["linf"].step_and_project(x, x, gradient, 0.25, 0.125)
    # x + 0.25·sign(g) = [0.75, 0.25, 1.1875, 0.0625]; δ clipped to ±0.125; then the box.
    assert torch.equal(out, torch.tensor([[0.625, 0.375, 1.0, 0.0625]]))


def test_l2_step_and_project_takes_the_unit_step_then_rescales_onto_the_ball():
    x = torch.tensor([[0.5, 0.5]])
    gradient = torch.tensor([[3.0, 4.0]])  # unit direction (0.6, 0.8)
    inside = NORMS["l2"].step_and_project(x, x, gradient, 0.5, 1.0)
    shrunk = NORMS["l2"].step_and_project(x, x, gradient, 0.5, 0.25)  # ||δ|| = 0.5 -> 0.25
    torch.testing.assert_close(inside, torch.tensor([[0.8, 0.9]]), rtol=0, atol=1e-7)
    torch.testing.assert_close(shrunk, torch.tensor([[0.65, 0.7]]), rtol=0, atol=1e-7)


def test_l2_step_and_project_clips_to_the_box_after_the_ball():
    x = torch.tensor([[0.875, 0.5]])
    out = NORMS["l2"].step_and_project(x, x, torch.tensor([[1.0, 0.0]]), 0.5, 1.0)
    assert torch.equal(out, torch.tensor([[1.0, 0.5]]))


def test_linf_projection_is_the_exact_projection_onto_box_and_ball():
    torch.manual_seed(0)
    x, x_adv = torch.rand(8, 3, 4, 4), torch.rand(8, 3, 4, 4) * 2 - 0.5
    epsilon = 0.1
    low, high = (x - epsilon).clamp_min(0.0), (x + epsilon).clamp_max(1.0)
    expected = torch.minimum(torch.maximum(x_adv, low), high)
    torch.testing.assert_close(NORMS["linf"].project_onto_threat(x_adv, x, epsilon), expected)


@pytest.mark.parametrize("norm", NORM_NAMES)
def test_step_and_project_stays_in_the_ball_and_the_box(norm):
    torch.manual_seed(1)
    x = torch.rand(16, 3, 4, 4)
    x_adv = NORMS[norm].random_start(x, 0.3, "uniform")
    for _ in range(5):  # steps much larger than ε: every one needs the projection
        x_adv = NORMS[norm].step_and_project(x_adv, x, torch.randn_like(x), 2.0, 0.3)
        assert (NORMS[norm](x_adv - x) <= 0.3 * (1 + 1e-5)).all()
        assert x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("norm", NORM_NAMES)
def test_a_per_example_step_size_moves_each_example_by_its_own_step(norm):
    x = torch.full((2, 1, 2, 2), 0.5)
    gradient = torch.ones_like(x)
    step = per_example(torch.tensor([0.0, 0.125]), x)  # APGD's η: one step size per example
    out = NORMS[norm].step_and_project(x, x, gradient, step, 1.0)
    assert torch.equal(out[0], x[0])  # step 0: stays
    expected = x[1] + 0.125 * NORMS[norm].ascent_direction(gradient)[1]
    torch.testing.assert_close(out[1], expected)


def test_move_and_project_steps_along_the_given_direction_unnormalized():
    x = torch.tensor([[0.5, 0.5]])
    direction = torch.tensor([[0.125, -0.0625]])  # not a sign: taken as it is
    out = NORMS["linf"].move_and_project(x, x, direction, 2.0, 0.5)
    assert torch.equal(out, torch.tensor([[0.75, 0.375]]))


@pytest.mark.parametrize("init", INIT_NAMES)
@pytest.mark.parametrize("norm", NORM_NAMES)
def test_random_starts_lie_in_the_ball_and_the_box(norm, init):
    torch.manual_seed(2)
    x = torch.rand(32, 3, 4, 4)
    start = NORMS[norm].random_start(x, 0.3, init)
    assert (NORMS[norm](start - x) <= 0.3 * (1 + 1e-5)).all()
    assert start.min() >= 0 and start.max() <= 1


@pytest.mark.parametrize("norm", NORM_NAMES)
def test_zero_start_is_x_itself(norm):
    x = torch.rand(4, 1, 3, 3)
    assert torch.equal(NORMS[norm].random_start(x, 0.3, "zero"), x)


@pytest.mark.parametrize("init", INIT_NAMES)
@pytest.mark.parametrize("norm", NORM_NAMES)
def test_random_start_is_the_init_draw_projected(norm, init):
    x = torch.rand(8, 3, 4, 4)
    torch.manual_seed(3)
    start = NORMS[norm].random_start(x, 0.3, init)
    torch.manual_seed(3)
    expected = project(x, x + INITS[init](NORMS[norm], x, 0.3), 0.3, norm)
    assert torch.equal(start, expected)
