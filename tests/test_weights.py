"""Weight perturbations: layer selection, the relative ball, samplers, bitwise restoration and
the weight attacks (docs/flatness.md)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advflat.models import InputNormalization, ReBN
from advflat.weights import (
    SAMPLERS,
    AdversarialWeightAttack,
    JointWeightInputAttack,
    NoWeightAttack,
    RandomWeightAttack,
    RelativeBall,
    perturbed,
    select_layers,
    set_loss,
)
from tests.conftest import TinyNet, blobs


class Normalized(nn.Module):
    """Every kind of normalization layer next to conv/linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.whiten = InputNormalization(channels=1, mean=[0.5], std=[0.25])
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.rebn = ReBN(4)
        self.gn = nn.GroupNorm(2, 4)
        self.ln = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.gn(self.rebn(self.bn(self.conv(self.whiten(x)))))
        return self.fc(self.ln(h.mean(dim=(2, 3))))


def batches_of(n: int = 24, batch_size: int = 8):
    split = blobs(n, torch.Generator().manual_seed(1))
    return list(split.batches(batch_size))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_bitwise_equal(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} changed"


def test_layer_selection_excludes_normalization_layers_and_biases():
    layers = select_layers(Normalized())
    assert layers.names == ("conv.weight", "fc.weight")


def test_layer_selection_includes_biases_when_asked():
    layers = select_layers(Normalized(), include_biases=True)
    assert layers.names == ("conv.weight", "conv.bias", "fc.weight", "fc.bias")


def test_layer_selection_skips_frozen_parameters():
    model = Normalized()
    model.conv.weight.requires_grad_(False)
    assert select_layers(model).names == ("fc.weight",)


@pytest.mark.parametrize("filter_wise", [False, True])
def test_sphere_realises_exactly_the_relative_radius_in_every_group(filter_wise):
    weights = [p.detach() for p in select_layers(Normalized(), include_biases=True)]
    ball = RelativeBall(weights, 0.3, filter_wise=filter_wise)
    for ratio in ball.relative_norms(SAMPLERS["sphere"](ball)):
        torch.testing.assert_close(ratio, torch.full_like(ratio, 0.3))


@pytest.mark.parametrize("sampler", ["ball", "uniform_norm", "zero"])
@pytest.mark.parametrize("filter_wise", [False, True])
def test_other_samplers_stay_inside_the_ball(sampler, filter_wise):
    weights = [p.detach() for p in select_layers(Normalized(), include_biases=True)]
    ball = RelativeBall(weights, 0.3, filter_wise=filter_wise)
    for ratio in ball.relative_norms(SAMPLERS[sampler](ball)):
        assert (ratio <= 0.3 * (1 + 1e-6)).all()


def test_filter_wise_ball_constrains_every_output_filter():
    w = torch.randn(5, 3, 2, 2)
    ball = RelativeBall([w], 0.1, filter_wise=True)
    (nu,) = SAMPLERS["sphere"](ball)
    per_filter = nu.flatten(1).norm(dim=1) / w.flatten(1).norm(dim=1)
    torch.testing.assert_close(per_filter, torch.full((5,), 0.1))


@pytest.mark.parametrize(("sampler", "mean_ratio"), [("uniform_norm", 1 / 2), ("ball", 2 / 3)])
def test_sampler_radius_distribution_matches_closed_form(sampler, mean_ratio):
    # radius/R is U[0,1] for uniform_norm (mean 1/2) and u^(1/d) in volume (mean d/(d+1)), d=2.
    ball = RelativeBall([torch.tensor([3.0, 4.0])], 0.5)
    ratios = torch.stack([ball.relative_norms(SAMPLERS[sampler](ball))[0] for _ in range(4000)])
    stderr = ratios.std() / 4000**0.5
    assert abs(ratios.mean() / 0.5 - mean_ratio) < 5 * stderr / 0.5


@pytest.mark.parametrize("filter_wise", [False, True])
def test_projection_never_exceeds_the_radius_and_keeps_short_perturbations(filter_wise):
    weights = [torch.randn(6, 3, 3, 3), torch.randn(10, 6)]
    ball = RelativeBall(weights, 0.05, filter_wise=filter_wise)
    long = [10 * torch.randn_like(w) for w in weights]
    for ratio in ball.relative_norms(ball.project(long)):
        assert (ratio <= 0.05 * (1 + 1e-6)).all()
        torch.testing.assert_close(ratio, torch.full_like(ratio, 0.05))
    short = [0.5 * v for v in SAMPLERS["sphere"](ball)]
    for before, after in zip(short, ball.project(short), strict=True):
        assert torch.equal(before, after)


def test_gradient_normalization_gives_every_layer_its_weight_norm():
    weights = [torch.randn(4, 3), 7 * torch.randn(5)]
    ball = RelativeBall(weights, 0.1)
    gradients = ball.normalize_gradient([1e-3 * torch.randn(4, 3), 1e3 * torch.randn(5)])
    for g, w in zip(gradients, weights, strict=True):
        torch.testing.assert_close(g.norm(), w.norm())


def test_perturbed_applies_nu_and_restores_bitwise():
    model = TinyNet()
    layers = select_layers(model, include_biases=True)
    nu = [torch.randn_like(p) * 0.37 for p in layers]
    # The trap this protects against: subtracting ν again would not give w back.
    assert any(not torch.equal((p + v) - v, p) for p, v in zip(layers, nu, strict=True))
    before = snapshot(model)
    with perturbed(model, layers, nu):
        for p, v, name in zip(layers, nu, layers.names, strict=True):
            assert torch.equal(p, before[name] + v)
    assert_bitwise_equal(model, before)


def test_perturbed_restores_bitwise_after_an_exception():
    model = TinyNet()
    layers = select_layers(model)
    before = snapshot(model)
    with (
        pytest.raises(RuntimeError, match="boom"),
        perturbed(model, layers, [p * 3 for p in layers]),
    ):
        raise RuntimeError("boom")
    assert_bitwise_equal(model, before)


def test_perturbed_rejects_layers_of_another_model_and_wrong_shapes():
    model, other = TinyNet(), TinyNet()
    layers = select_layers(other)
    with pytest.raises(ValueError, match="not a parameter of this model"):
        perturbed(model, layers, [torch.zeros_like(p) for p in layers]).__enter__()
    own = select_layers(model)
    with pytest.raises(ValueError, match="shape"):
        perturbed(model, own, [torch.zeros(1) for _ in own]).__enter__()
    with pytest.raises(ValueError, match="one tensor per layer"):
        perturbed(model, own, []).__enter__()


# Small budgets of the tests' own (the learning rates of conf/weight_attack/*.yaml).
ASCENT = {"xi": 0.05, "steps": 3, "lr": 0.01}
JOINT = {"xi": 0.05, "steps": 3, "weight_lr": 0.01, "input_lr": 0.007, "epsilon": 0.1}

ATTACKS = {
    "none": lambda: NoWeightAttack(),
    "random": lambda: RandomWeightAttack(xi=0.5),
    "adversarial": lambda: AdversarialWeightAttack(**ASCENT),
    "joint": lambda: JointWeightInputAttack(**JOINT),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_weight_attack_restores_the_model_bitwise(name):
    model = TinyNet().eval()
    before = snapshot(model)
    perturbation = ATTACKS[name]()(model, batches_of())
    assert_bitwise_equal(model, before)
    assert all(not v.requires_grad for v in perturbation.nu)
    assert all(p.grad is None for p in model.parameters())  # autograd.grad, not .backward()


@pytest.mark.parametrize("name", ["random", "adversarial", "joint"])
def test_weight_attacks_stay_inside_the_relative_ball(name):
    model = TinyNet().eval()
    attack = ATTACKS[name]()
    perturbation = attack(model, batches_of())
    ball = RelativeBall(perturbation.layers.weights(), attack.xi)
    for ratio in ball.relative_norms(perturbation.nu):
        assert ratio <= attack.xi * (1 + 1e-6)


def test_no_weight_attack_is_falsy_and_perturbs_nothing():
    attack = NoWeightAttack()
    assert not attack
    assert all(torch.equal(v, torch.zeros_like(v)) for v in attack(TinyNet(), batches_of()).nu)


def loss_at(model, batches, perturbation, inputs=None):
    with perturbed(model, perturbation.layers, perturbation.nu):
        return set_loss(model, batches, inputs=inputs).item()


@pytest.mark.parametrize("seed", range(3))
def test_adversarial_weight_attack_never_ends_below_its_starting_loss(seed):
    model, batches = TinyNet().eval(), batches_of()
    torch.manual_seed(seed)
    start = RandomWeightAttack(xi=0.1, sampler="uniform_norm")(model, batches)  # same ν₀ draw
    torch.manual_seed(seed)
    result = AdversarialWeightAttack(xi=0.1, steps=5, lr=0.5)(model, batches)
    assert result.loss >= loss_at(model, batches, start)
    assert result.loss > set_loss(model, batches).item()  # and it really ascends
    # the reported loss is the loss at the returned perturbation
    assert result.loss == pytest.approx(loss_at(model, batches, result), rel=1e-6)


def test_adversarial_weight_attack_from_zero_never_ends_below_the_clean_loss():
    model, batches = TinyNet().eval(), batches_of()
    result = AdversarialWeightAttack(xi=1e-3, steps=2, lr=1e-3, init="zero")(model, batches)
    assert result.loss >= set_loss(model, batches).item()


def test_adversarial_weight_attack_accumulates_over_batches():
    # One ν for the whole set: the split into batches must not matter.
    model = TinyNet().eval()
    results = []
    for batch_size in (24, 5):
        torch.manual_seed(0)
        attack = AdversarialWeightAttack(xi=0.1, steps=3, lr=0.05, init="zero")
        results.append(attack(model, batches_of(24, batch_size)))
    for a, b in zip(results[0].nu, results[1].nu, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_joint_attack_returns_inputs_in_box_and_ball_and_ascends():
    model, batches = TinyNet().eval(), batches_of()
    attack = JointWeightInputAttack(**{**JOINT, "steps": 5, "input_lr": 0.03})
    result = attack(model, batches)
    for (x, _), x_adv in zip(batches, result.inputs, strict=True):
        assert (x_adv - x).abs().max() <= 0.1 + 1e-6
        assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert result.loss == pytest.approx(loss_at(model, batches, result, result.inputs), rel=1e-6)
    assert result.loss > set_loss(model, batches).item()


def test_joint_attack_shares_one_weight_perturbation_over_batches():
    model = TinyNet().eval()
    results = []
    for batch_size in (24, 7):
        torch.manual_seed(0)
        attack = JointWeightInputAttack(**JOINT, init="zero", input_init="zero")
        results.append(attack(model, batches_of(24, batch_size)))
    for a, b in zip(results[0].nu, results[1].nu, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(torch.cat(results[0].inputs), torch.cat(results[1].inputs))


def test_weight_attack_objective_is_pluggable():
    model, batches = TinyNet().eval(), batches_of()

    def negative_ce(logits, y):
        return -F.cross_entropy(logits, y, reduction="none")

    attack = AdversarialWeightAttack(xi=0.1, steps=3, lr=0.05, init="zero")
    result = attack(model, batches, negative_ce)
    assert loss_at(model, batches, result) <= set_loss(model, batches).item()


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: RandomWeightAttack(xi=0.0), "xi must be > 0"),
        (lambda: RandomWeightAttack(xi=-1.0), "xi must be > 0"),
        (lambda: RandomWeightAttack(xi=0.5, sampler="gauss"), "sampler must be one of"),
        (lambda: AdversarialWeightAttack(**{**ASCENT, "xi": 0.0}), "xi must be > 0"),
        (lambda: AdversarialWeightAttack(**{**ASCENT, "steps": 0}), "steps must be >= 1"),
        (lambda: AdversarialWeightAttack(**{**ASCENT, "lr": 0.0}), "lr must be > 0"),
        (lambda: AdversarialWeightAttack(**ASCENT, init="gauss"), "init must be one of"),
        (lambda: JointWeightInputAttack(**{**JOINT, "xi": 0.0}), "xi must be > 0"),
        (lambda: JointWeightInputAttack(**{**JOINT, "epsilon": 0.0}), "epsilon must be > 0"),
        (lambda: JointWeightInputAttack(**{**JOINT, "input_lr": -1.0}), "input_lr must be > 0"),
        (lambda: JointWeightInputAttack(**{**JOINT, "weight_lr": 0.0}), "weight_lr must be > 0"),
        (lambda: JointWeightInputAttack(**JOINT, norm="l1"), "norm must be one of"),
        (lambda: RelativeBall([torch.ones(2)], 0.0), "xi must be > 0"),
    ],
)
def test_bad_values_are_rejected_with_the_parameter_name(factory, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        factory()


def test_selection_with_nothing_to_perturb_is_an_error():
    with pytest.raises(ValueError, match="no parameter to perturb"):
        select_layers(nn.BatchNorm1d(3))
