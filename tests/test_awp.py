"""Adversarial (and random) weight perturbation training: restoration, the update at w+ν applied
to w, the decision "first ascent step AT w+ν₀", the relative ball, curriculum, population."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from advflat.attacks.base import Attack
from advflat.core.errors import ConfigError
from advflat.training.updates import AWP, WeightAscent
from advflat.weights import (
    SAMPLERS,
    JointWeightInputAttack,
    NoWeightAttack,
    RelativeBall,
    perturbed,
    select_layers,
)
from tests.setups import (
    adversarial_weights,
    at_loss,
    awp_update,
    random_weights,
    sgd,
    step,
    trades_loss,
    trainer,
)


class ShiftAttack(Attack):
    def perturb(self, model, x, y, objective):
        return (x + 0.1).clamp(0, 1)


def make(update: AWP | None = None, weights=None, loss=None, **options):
    """AT (or ``loss``) with the AWP update on ``weights`` (default: AWP's ξ 0.005, 1 step)."""
    return trainer(
        at_loss() if loss is None else loss,
        awp_update() if update is None else update,
        batch_size=16,
        optimizer=sgd(0.5, momentum=0.0),
        attack=ShiftAttack(),
        weight_attack=adversarial_weights() if weights is None else weights,
        **options,
    )


def plain(**options):
    return trainer(at_loss(), batch_size=16, optimizer=sgd(0.5, momentum=0.0), attack=ShiftAttack())


@pytest.fixture
def batch(tiny_data):
    return tiny_data.train.x[:16], tiny_data.train.y[:16]


def parameters(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def perturb(model, nu):
    """``perturbed`` on AWP's layer selection (weights outside normalization layers)."""
    return perturbed(model, select_layers(model), nu)


def record_train_forwards(method) -> list[list[torch.Tensor]]:
    """Make ``method`` record the parameters every training forward (the one whose loss is
    backpropagated, not the weight ascent's) sees."""
    seen: list[list[torch.Tensor]] = []
    original = method.context.train_forward

    def recording(x):
        seen.append(parameters(method.context.module))
        return original(x)

    method.context.train_forward = recording
    return seen


@pytest.mark.parametrize("filter_wise", [False, True])
def test_train_forward_sees_only_conv_and_linear_weights_perturbed_within_the_ball(
    tiny_net, tiny_data, batch, filter_wise
):
    method = make(weights=adversarial_weights(xi=0.1, steps=2, lr=0.08, filter_wise=filter_wise))
    method.prepare(tiny_net, tiny_data, seed=0)
    names = [n for n, _ in tiny_net.named_parameters()]
    seen = record_train_forwards(method)
    before = parameters(tiny_net)
    step(method, tiny_net, *batch)
    changed = [n for n, a, b in zip(names, seen[0], before, strict=True) if not torch.equal(a, b)]
    assert changed == ["body.1.weight", "head.weight"]  # no BN parameters, no biases
    for name in changed:
        i = names.index(name)
        nu, w = seen[0][i] - before[i], before[i]
        dim = 1 if filter_wise else None  # per output filter (row) or per tensor
        ratio = nu.norm(dim=dim) / w.norm(dim=dim)
        assert (ratio <= 0.1 * (1 + 1e-4)).all() and (ratio > 0).all()


def test_unperturbed_weights_are_restored_bitwise_before_every_optimizer_step(
    tiny_net, tiny_data, batch
):
    method = make(awp_update(population=2), adversarial_weights(steps=3))
    method.prepare(tiny_net, tiny_data, seed=0)
    seen_in_forward = record_train_forwards(method)
    at_step: list[list[torch.Tensor]] = []
    method.optimizer.register_step_pre_hook(lambda *_: at_step.append(parameters(tiny_net)))
    for _ in range(3):
        before = parameters(tiny_net)
        step(method, tiny_net, *batch)
        assert all(torch.equal(a, b) for a, b in zip(at_step[-1], before, strict=True))
        # ... while the train forwards saw perturbed weights (two population members).
        for seen in seen_in_forward[-2:]:
            assert not torch.equal(seen[0], before[0])
        assert not torch.equal(seen_in_forward[-1][0], seen_in_forward[-2][0])
    assert len(at_step) == 3


def test_gradient_at_the_perturbed_weights_is_applied_to_the_unperturbed_ones(
    tiny_net, tiny_data, batch
):
    method = make(awp_update(gradient_clipping=None))
    method.prepare(tiny_net, tiny_data, seed=0)
    nus = [0.05 * torch.randn_like(w) for w in select_layers(tiny_net)]
    method.update.perturbation = lambda *args: [nu.clone() for nu in nus]
    reference, before = copy.deepcopy(tiny_net), parameters(tiny_net)
    step(method, tiny_net, *batch)

    with torch.no_grad():
        for w, nu in zip(select_layers(reference), nus, strict=True):
            w.add_(nu)
    x, y = batch
    reference.train()
    loss = nn.functional.cross_entropy(reference((x + 0.1).clamp(0, 1)), y)
    gradients = torch.autograd.grad(loss, list(reference.parameters()))
    for p, w, g in zip(tiny_net.parameters(), before, gradients, strict=True):
        torch.testing.assert_close(p, w - 0.5 * g)


def test_population_averages_the_gradients_of_its_perturbations(tiny_net, tiny_data, batch):
    method = make(awp_update(gradient_clipping=None, population=2))
    method.prepare(tiny_net, tiny_data, seed=0)
    draws = [[0.05 * torch.randn_like(w) for w in select_layers(tiny_net)] for _ in range(2)]
    queue = iter(draws)
    method.update.perturbation = lambda *args: next(queue)
    reference, before = copy.deepcopy(tiny_net), parameters(tiny_net)
    step(method, tiny_net, *batch)

    x, y = batch
    total = [torch.zeros_like(w) for w in before]
    for nus in draws:
        with perturb(reference, nus):
            reference.train()
            loss = nn.functional.cross_entropy(reference((x + 0.1).clamp(0, 1)), y)
            gradients = torch.autograd.grad(loss, list(reference.parameters()))
        total = [t + g / 2 for t, g in zip(total, gradients, strict=True)]
    for p, w, g in zip(tiny_net.parameters(), before, total, strict=True):
        torch.testing.assert_close(p, w - 0.5 * g)


def ball_of(model, xi: float) -> tuple:
    layers = select_layers(model)
    return layers, RelativeBall(layers.weights(), xi)


def test_first_ascent_step_is_taken_at_w_plus_nu0_and_the_last_iterate_is_used(
    tiny_net, tiny_data, batch, monkeypatch
):
    method = make(weights=adversarial_weights(xi=0.5, steps=1, lr=0.1, init="sphere"))
    method.prepare(tiny_net, tiny_data, seed=0)
    layers, ball = ball_of(tiny_net, 0.5)
    start = SAMPLERS["sphere"](ball)
    monkeypatch.setitem(SAMPLERS, "sphere", lambda ball: [s.clone() for s in start])
    x, y = batch
    inputs = (x + 0.1).clamp(0, 1)
    nus = method.update.perturbation(method.context, method.loss, tiny_net, layers, ball, inputs, y)

    reference = copy.deepcopy(tiny_net).eval()  # the ascent runs in attack (eval) mode
    with perturb(reference, start):
        loss = nn.functional.cross_entropy(reference(inputs), y)
        gradients = torch.autograd.grad(loss, list(select_layers(reference)))
    for nu, s, g, w in zip(nus, start, gradients, select_layers(reference), strict=True):
        stepped = s + 0.1 * w.norm() * g / g.norm()
        expected = stepped * torch.clamp(0.5 * w.norm() / stepped.norm(), max=1.0)
        torch.testing.assert_close(nu, expected)
    assert any(not torch.equal(nu, s) for nu, s in zip(nus, start, strict=True))


@pytest.mark.parametrize(("init", "steps"), [("uniform_norm", 5), ("sphere", 2), ("zero", 3)])
def test_weight_perturbation_stays_in_the_relative_ball(tiny_net, tiny_data, batch, init, steps):
    method = make(weights=adversarial_weights(xi=0.02, steps=steps, lr=0.015, init=init))
    method.prepare(tiny_net, tiny_data, seed=0)
    layers, ball = ball_of(tiny_net, 0.02)
    x, y = batch
    inputs = (x + 0.1).clamp(0, 1)
    nus = method.update.perturbation(method.context, method.loss, tiny_net, layers, ball, inputs, y)
    for nu, w in zip(nus, layers, strict=True):
        assert 0 < nu.norm() <= 0.02 * w.norm() * (1 + 1e-5)


def test_random_variant_samples_exactly_on_the_relative_sphere(tiny_net, batch):
    method = make(weights=random_weights(xi=0.3))
    layers, ball = ball_of(tiny_net, 0.3)
    nus = method.update.perturbation(method.context, method.loss, tiny_net, layers, ball, *batch)
    for nu, w in zip(nus, layers, strict=True):
        assert nu.norm().item() == pytest.approx(0.3 * w.norm().item(), rel=1e-5)
    assert method.update.ascent.steps == 0


def test_awp_update_differs_from_plain_adversarial_training(tiny_net, tiny_data, batch):
    reference = copy.deepcopy(tiny_net)
    at = plain()
    awp = make(awp_update(gradient_clipping=None), adversarial_weights(xi=0.05))
    at.prepare(reference, tiny_data, seed=0)
    awp.prepare(tiny_net, tiny_data, seed=0)
    step(at, reference, *batch)
    step(awp, tiny_net, *batch)
    differences = [
        (p - q).abs().max().item()
        for p, q in zip(tiny_net.parameters(), reference.parameters(), strict=True)
    ]
    assert max(differences) > 1e-4


def test_curriculum_skips_the_perturbation_while_the_adversarial_loss_is_high(
    tiny_net, tiny_data, batch
):
    reference = copy.deepcopy(tiny_net)
    at = plain()
    awp = make(awp_update(curriculum=1e-6, gradient_clipping=None))  # the loss is never < 1e-6
    at.prepare(reference, tiny_data, seed=0)
    awp.prepare(tiny_net, tiny_data, seed=0)
    step(at, reference, *batch)
    stats = step(awp, tiny_net, *batch)
    assert stats["weights_perturbed"].item() == 0.0
    assert all(
        torch.equal(p, q)
        for p, q in zip(tiny_net.parameters(), reference.parameters(), strict=True)
    )


def test_norm_mode_gradient_clipping_bounds_the_total_update(tiny_net, tiny_data, batch):
    method = make(awp_update(gradient_clipping=0.01, gradient_clipping_mode="norm"))
    method.prepare(tiny_net, tiny_data, seed=0)
    before = parameters(tiny_net)
    step(method, tiny_net, *batch)
    change = torch.cat(
        [(p - w).flatten() for p, w in zip(tiny_net.parameters(), before, strict=True)]
    )
    assert change.norm().item() <= 0.5 * 0.01 * (1 + 1e-4)  # lr · max gradient norm


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"population": 0}, r"^population must be >= 1"),
        ({"curriculum": 0.0}, r"^curriculum must be > 0"),
        ({"gradient_clipping": 0.0}, r"^gradient_clipping must be > 0"),
        ({"gradient_clipping_mode": "value"}, r"^gradient_clipping_mode must be one of"),
    ],
)
def test_bad_awp_options_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        awp_update(**kwargs)


def test_the_ascent_is_the_configured_weight_attacks():
    ascent = WeightAscent.of(adversarial_weights(xi=0.01, steps=3, lr=0.002, init="zero"))
    assert ascent == WeightAscent(0.01, "zero", 3, 0.002, False, False)
    assert WeightAscent.of(random_weights(xi=0.02, sampler="ball")) == WeightAscent(
        0.02, "ball", 0, 0.0, False, False
    )


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (None, "needs weight_attack=adversarial .* got weight_attack=none"),
        (NoWeightAttack(), "needs weight_attack=adversarial .* got weight_attack=none"),
        (
            JointWeightInputAttack(xi=0.01, steps=1, weight_lr=0.01, input_lr=0.01, epsilon=0.1),
            "trains with weight_attack=adversarial .* got JointWeightInputAttack",
        ),
    ],
)
def test_awp_refuses_a_missing_or_input_perturbing_weight_attack(weights, message):
    with pytest.raises(ConfigError, match=message):
        awp_update().attach(weights)


def test_a_weight_attack_without_the_awp_update_is_refused():
    with pytest.raises(ConfigError, match=r"only used by trainer/update=awp"):
        trainer(at_loss(), attack=ShiftAttack(), weight_attack=adversarial_weights())


def test_trades_trains_with_the_awp_update(tiny_net, tiny_data, batch):
    """TRADES-AWP: the composition the old class hierarchy could not express."""
    method = make(awp_update(gradient_clipping=None), loss=trades_loss(6.0))
    method.prepare(tiny_net, tiny_data, seed=0)
    seen = record_train_forwards(method)
    before = parameters(tiny_net)
    stats = step(method, tiny_net, *batch)
    assert {"kl", "clean_loss", "robust_loss"} <= set(stats)
    assert stats["weights_perturbed"].item() == 1.0
    assert not torch.equal(seen[0][0], before[0])  # the TRADES forward saw w + ν
    assert not torch.equal(tiny_net.head.weight, before[-2])  # and w moved
