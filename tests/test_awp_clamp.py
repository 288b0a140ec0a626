"""AWP's gradient clipping: element-wise (the paper's default) on the gradient taken at the
perturbed weights, each population member's clamped before they are averaged, and no clamping
on a step the curriculum leaves unperturbed — against the closed-form gradient of a linear
softmax classifier."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from advflat.data.base import ImageData
from advflat.training.losses import CleanLoss
from advflat.weights import select_layers
from tests.conftest import CONF, blobs
from tests.setups import adversarial_weights, awp_update, sgd, step, trainer

LR = 0.5


def linear_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3, bias=False)).double()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    split = blobs(16, torch.Generator().manual_seed(4))
    return split.x.double(), split.y


def closed_form_gradient(v: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∇_V of the mean CE of logits V·x: (softmax(V·x) − onehot(y))ᵀ·x / B, shape (K, D)."""
    x = x.flatten(1)
    residual = torch.softmax(x @ v.T, dim=1) - F.one_hot(y, 3).double()
    return residual.T @ x / len(y)


def awp_on(model: nn.Module, nus: list[list[torch.Tensor]], **options):
    """A prepared AWP trainer (clean loss, SGD without momentum) whose perturbations are
    ``nus``, one per population member, in order."""
    method = trainer(
        CleanLoss(),
        awp_update(**options),
        batch_size=16,
        optimizer=sgd(LR, momentum=0.0),
        weight_attack=adversarial_weights(),
    )
    method.prepare(model, _data(), seed=0)
    queue = iter(nus)

    def fixed(*_: object) -> list[torch.Tensor]:
        return [nu.clone() for nu in next(queue)]

    method.update.perturbation = fixed
    return method


def _data() -> ImageData:
    generator = torch.Generator().manual_seed(0)
    return ImageData(blobs(32, generator), blobs(16, generator), num_classes=3)


def test_elementwise_clipping_steps_by_the_clamped_gradient_at_the_perturbed_weights():
    model, (x, y) = linear_model(), batch()
    w = model[1].weight.detach().clone()
    nu = 0.05 * torch.randn_like(w)
    g = closed_form_gradient(w + nu, x, y)
    c = g.abs().median().item()  # half of the entries are clamped
    assert (g.abs() > c).any() and (g.abs() < c).any()
    method = awp_on(model, [[nu]], gradient_clipping=c, gradient_clipping_mode="elementwise")
    stats = step(method, model, x, y)
    assert stats["weights_perturbed"].item() == 1.0
    expected = w - LR * g.clamp(-c, c)
    torch.testing.assert_close(model[1].weight.detach(), expected, rtol=1e-12, atol=1e-14)


def test_elementwise_clipping_clamps_each_population_member_before_averaging():
    model, (x, y) = linear_model(), batch()
    w = model[1].weight.detach().clone()
    nus = [0.05 * torch.randn_like(w), 0.05 * torch.randn_like(w)]
    g1, g2 = (closed_form_gradient(w + nu, x, y) for nu in nus)
    c = 0.5 * g1.abs().median().item()
    method = awp_on(
        model,
        [[nu] for nu in nus],
        population=2,
        gradient_clipping=c,
        gradient_clipping_mode="elementwise",
    )
    step(method, model, x, y)
    expected = w - LR * (g1.clamp(-c, c) + g2.clamp(-c, c)) / 2
    torch.testing.assert_close(model[1].weight.detach(), expected, rtol=1e-12, atol=1e-14)
    # ... which is not clamping the average: the order is a choice, and this is the original's.
    clamped_mean = w - LR * ((g1 + g2) / 2).clamp(-c, c)
    assert not torch.allclose(expected, clamped_mean, rtol=1e-6, atol=1e-9)


def test_a_step_the_curriculum_leaves_unperturbed_is_not_clamped():
    model, (x, y) = linear_model(), batch()
    w = model[1].weight.detach().clone()
    g = closed_form_gradient(w, x, y)  # at w: nothing is perturbed
    c = 0.5 * g.abs().median().item()
    method = awp_on(
        model,
        [],
        curriculum=1e-6,  # the loss is never below it: no perturbation
        gradient_clipping=c,
        gradient_clipping_mode="elementwise",
    )
    stats = step(method, model, x, y)
    assert stats["weights_perturbed"].item() == 0.0
    torch.testing.assert_close(model[1].weight.detach(), w - LR * g, rtol=1e-12, atol=1e-14)
    assert (g.abs() > c).any()  # clamping would have changed the step


def test_norm_mode_clips_the_total_gradient_norm():
    model, (x, y) = linear_model(), batch()
    w = model[1].weight.detach().clone()
    nu = 0.05 * torch.randn_like(w)
    g = closed_form_gradient(w + nu, x, y)
    c = 0.5 * g.norm().item()
    method = awp_on(model, [[nu]], gradient_clipping=c, gradient_clipping_mode="norm")
    step(method, model, x, y)
    expected = w - LR * g * (c / (g.norm() + 1e-6))  # torch's clip_grad_norm_ factor
    torch.testing.assert_close(model[1].weight.detach(), expected, rtol=1e-10, atol=1e-12)


def test_awp_yaml_clamps_elementwise_at_the_papers_bound():
    node = OmegaConf.load(CONF / "trainer" / "update" / "awp.yaml")
    assert (node.gradient_clipping, node.gradient_clipping_mode) == (0.05, "elementwise")


def test_only_the_selected_weights_are_perturbed_in_the_linear_model():
    assert select_layers(linear_model()).names == ("1.weight",)


@pytest.mark.parametrize("mode", ["value", "", None])
def test_unknown_clipping_modes_are_rejected(mode):
    with pytest.raises(ValueError, match="^gradient_clipping_mode must be one of"):
        awp_update(gradient_clipping_mode=mode)
