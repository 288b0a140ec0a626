"""The model zoo: shapes, known parameter counts, ReBN/whiten semantics, one SGD step per
normalization and activation, validation, double backward (Hessian-vector products), input
gradients and the features/classifier split. Every model of the registry is tested."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from torch import nn

from advflat.models import (
    ACTIVATIONS,
    MLP,
    NORMALIZATION_TYPES,
    NORMALIZATIONS,
    InputNormalization,
    LeNet,
    PreActResNet18,
    ReBN,
    ResNet18,
    SimpleNet,
    WideResNet,
)
from advflat.models.layers import group_count
from advflat.models.registry import MODELS
from advflat.training.losses.rotation import rotation_head

CIFAR = {"num_classes": 10, "input_shape": (3, 32, 32)}
# Options that keep a registered model small enough for a CPU test; a model not listed here is
# tested at its default size.
SMALL: dict[type[nn.Module], dict[str, Any]] = {
    ResNet18: {"channels": 8},
    PreActResNet18: {"channels": 8},
    WideResNet: {"depth": 10, "width": 1, "dropout": 0.3},
}
REGISTERED = sorted(MODELS)  # the `_target_` names a config or checkpoint may use
NAMES = [MODELS[target].__name__ for target in REGISTERED]
# One SGD step on this batch: 16x16 is the smallest input SimpleNet takes.
STEP_SHAPE = (3, 16, 16)


def small(target: str, **options: Any) -> nn.Module:
    """The registered model ``target`` for CIFAR-10 with the options of ``SMALL``."""
    cls = MODELS[target]
    return cls(**{**CIFAR, **SMALL.get(cls, {}), **options})


def sgd_step_losses(model: nn.Module, lr: float = 0.01) -> tuple[float, float]:
    """The train-mode loss on a fixed batch before and after one SGD step on that batch.

    The same seed before each forward gives dropout the same masks, so the two losses differ by
    the step alone. lr 0.01 is small enough for the first-order decrease lr·|g|² to win for
    every model, normalization and activation (0.05 overshoots SimpleNet with tanh).
    """
    x = torch.rand(4, *STEP_SHAPE, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3])

    def loss() -> torch.Tensor:
        torch.manual_seed(1)
        return nn.functional.cross_entropy(model.train()(x), y)

    before = loss()
    before.backward()
    # w ← w − lr·∇L by hand: the first torch.optim step of a process imports torch._dynamo (2 s).
    with torch.no_grad():
        for p in model.parameters():
            p.sub_(lr * p.grad)
        after = loss()
    return before.item(), after.item()


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(params=REGISTERED, ids=NAMES)
def small_model(request) -> nn.Module:
    return small(request.param, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3])


def test_every_model_maps_cifar_images_to_logits(small_model):
    x = torch.rand(2, 3, 32, 32)
    assert small_model(x).shape == (2, 10)
    assert next(iter(small_model.named_children()))[0] == "whiten"


@pytest.mark.parametrize("model_class", [LeNet, MLP])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_small_models_accept_digits_mnist_and_cifar_shapes(model_class, shape):
    model = model_class(num_classes=10, input_shape=list(shape))
    assert model(torch.rand(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        # Known values for CIFAR-10 (10 classes, BN): ResNet-18 11.17M, WRN-28-10 36.5M,
        # PreAct ResNet-18 = 11,171,146 + the final BN (2 x 512).
        (lambda: ResNet18(**CIFAR), 11_173_962),
        (lambda: PreActResNet18(**CIFAR), 11_171_146 + 1024),
        (lambda: WideResNet(**CIFAR), 36_479_194),
    ],
)
def test_parameter_counts_match_known_values(build, expected):
    assert n_parameters(build()) == expected


def test_simplenet_has_the_papers_5_48m_parameters():
    # Hasanpour et al. report 5.48M; BN affine parameters add ~11k.
    assert abs(n_parameters(SimpleNet(**CIFAR)) - 5.48e6) < 0.02e6


def test_rebn_matches_batchnorm_with_scale_one_plus_weight():
    torch.manual_seed(1)
    rebn, reference = ReBN(4), nn.BatchNorm2d(4)
    with torch.no_grad():
        rebn.weight.copy_(torch.tensor([0.5, -0.2, 0.0, 1.0]))
        rebn.bias.copy_(torch.tensor([0.1, 0.2, -0.3, 0.0]))
        reference.weight.copy_(1 + rebn.weight)
        reference.bias.copy_(rebn.bias)
    assert torch.equal(rebn.scale, reference.weight)
    for _ in range(3):  # train mode: batch statistics and identical running averages
        x = 3 * torch.randn(5, 4, 3, 3) + 1
        torch.testing.assert_close(rebn(x), reference(x))
    torch.testing.assert_close(rebn.running_mean, reference.running_mean)
    torch.testing.assert_close(rebn.running_var, reference.running_var)
    rebn.eval(), reference.eval()
    x = torch.randn(5, 4, 3, 3)
    torch.testing.assert_close(rebn(x), reference(x))


def test_rebn_starts_as_the_identity_on_normalized_activations():
    rebn = ReBN(3)
    assert torch.equal(rebn.weight, torch.zeros(3)) and torch.equal(rebn.bias, torch.zeros(3))
    x = 2 * torch.randn(8, 3, 4, 4) + 5
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    torch.testing.assert_close(rebn(x), (x - mean) / torch.sqrt(var + rebn.eps))
    # (N, C) inputs of an MLP work too
    z = torch.randn(6, 3)
    torch.testing.assert_close(rebn(z), (z - z.mean(0)) / torch.sqrt(z.var(0, False) + rebn.eps))


def test_rebn_momentum_none_is_a_cumulative_average_for_bn_recalibration():
    rebn = ReBN(2, momentum=None)
    batches = [torch.randn(4, 2, 2, 2) + i for i in range(3)]
    for x in batches:
        rebn(x)
    expected = torch.stack([x.mean(dim=(0, 2, 3)) for x in batches]).mean(0)
    torch.testing.assert_close(rebn.running_mean, expected)


def test_input_normalization_whitens_with_frozen_statistics():
    whiten = InputNormalization(channels=3, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.5])
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.2, 0.25, 0.5]).view(1, 3, 1, 1)
    assert torch.equal(whiten(mean.expand(2, 3, 4, 4)), torch.zeros(2, 3, 4, 4))
    torch.testing.assert_close(whiten((mean + std).expand(2, 3, 4, 4)), torch.ones(2, 3, 4, 4))
    assert list(whiten.parameters()) == []
    assert set(whiten.state_dict()) == {"mean", "std"}
    x = torch.rand(2, 3, 4, 4)
    assert torch.equal(InputNormalization(channels=3)(x), x)


@pytest.mark.parametrize("target", REGISTERED, ids=NAMES)
def test_normalization_types_cover_every_non_conv_non_linear_parameter(target):
    for normalization in NORMALIZATIONS:
        model = small(target, normalization=normalization)
        for module in model.modules():
            own = list(module.parameters(recurse=False))
            if own and not isinstance(module, NORMALIZATION_TYPES):
                assert isinstance(module, nn.Conv2d | nn.Linear), type(module)
        assert isinstance(model.whiten, NORMALIZATION_TYPES)
    assert isinstance(ReBN(2), NORMALIZATION_TYPES)


def styles() -> list[tuple[str, str]]:
    """(normalization, activation) pairs with every normalization and every activation at least
    once (each pair costs a training step of every model; the full product is 4x as many)."""
    normalizations, activations = sorted(NORMALIZATIONS), sorted(ACTIVATIONS)
    count = max(len(normalizations), len(activations))
    return [
        (normalizations[i % len(normalizations)], activations[i % len(activations)])
        for i in range(count)
    ]


@pytest.mark.parametrize(("normalization", "activation"), styles())
@pytest.mark.parametrize("target", REGISTERED, ids=NAMES)
def test_every_normalization_and_activation_builds_trains_and_evaluates(
    target, normalization, activation
):
    model = small(
        target, input_shape=STEP_SHAPE, normalization=normalization, activation=activation
    )
    before, after = sgd_step_losses(model)
    assert after < before
    logits = model.eval()(torch.rand(4, *STEP_SHAPE))  # running statistics from the steps
    assert logits.shape == (4, 10) and logits.isfinite().all()


@pytest.mark.parametrize(("channels", "groups"), [(64, 32), (512, 32), (16, 8), (48, 24), (10, 5)])
def test_group_norm_groups_divide_channels_with_two_or_more_per_group(channels, groups):
    assert group_count(channels) == groups


def test_unknown_normalization_names_the_choices():
    message = "normalization must be one of 'bn', 'rebn', 'gn', 'none', got 'foo'"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ResNet18(**CIFAR, normalization="foo")


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda: LeNet(**CIFAR, activation="swish"), "activation"),
        (lambda: ResNet18(**CIFAR, channels=0), "channels"),
        (lambda: ResNet18(**CIFAR, channels=2.5), "channels"),
        (lambda: PreActResNet18(**CIFAR, channels=-8), "channels"),
        (lambda: WideResNet(**CIFAR, depth=27), "depth"),
        (lambda: WideResNet(**CIFAR, depth=4), "depth"),
        (lambda: WideResNet(**CIFAR, width=0), "width"),
        (lambda: WideResNet(**CIFAR, dropout=1.0), "dropout"),
        (lambda: SimpleNet(**CIFAR, dropout=-0.1), "dropout"),
        (lambda: SimpleNet(num_classes=10, input_shape=(1, 8, 8)), "input_shape"),
        (lambda: LeNet(num_classes=10, input_shape=(1, 2, 2)), "input_shape"),
        (lambda: LeNet(**CIFAR, hidden=0), "hidden"),
        (lambda: MLP(**CIFAR, hidden=[64, 0]), "hidden"),
        (lambda: MLP(num_classes=1, input_shape=(3, 32, 32)), "num_classes"),
        (lambda: MLP(num_classes=10, input_shape=(3, 32)), "input_shape"),
        (lambda: MLP(num_classes=10, input_shape=(3, 0, 32)), "input_shape"),
        (lambda: MLP(**CIFAR, mean=[0.5, 0.5]), "mean"),
        (lambda: MLP(**CIFAR, std=[0.2, 0.0, 0.2]), "std"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_parameter(build, name):
    with pytest.raises(ValueError, match=f"^{name} "):
        build()


@pytest.mark.parametrize("activation", ["softplus", "relu"])
@pytest.mark.parametrize(
    "build",
    [
        lambda **kw: LeNet(num_classes=3, input_shape=(1, 8, 8), channels=4, hidden=8, **kw),
        lambda **kw: ResNet18(num_classes=3, input_shape=(1, 8, 8), channels=4, **kw),
    ],
    ids=["lenet", "resnet18"],
)
def test_hessian_vector_product_matches_finite_differences_of_the_gradient(build, activation):
    torch.manual_seed(2)
    model = build(normalization="bn", activation=activation).double()
    x, y = torch.rand(4, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    model(x)  # one train-mode pass gives BN sensible running statistics
    model.eval()  # BN uses running statistics, as the Hessian code does
    params = [p for p in model.parameters() if p.requires_grad]
    v = [torch.randn_like(p) for p in params]

    def gradient() -> torch.Tensor:
        loss = nn.functional.cross_entropy(model(x), y)
        return torch.autograd.grad(loss, params, create_graph=True)

    exact = torch.cat([t.flatten() for t in torch.autograd.grad(gradient(), params, v)])
    assert exact.norm() > 0
    if activation == "relu":
        return  # piecewise linear: finite differences may straddle a kink; double backward ran

    def shifted_gradient(step: float) -> torch.Tensor:
        with torch.no_grad():
            for p, d in zip(params, v, strict=True):
                p.add_(step * d)
        flat = torch.cat([g.detach().flatten() for g in gradient()])
        with torch.no_grad():
            for p, d in zip(params, v, strict=True):
                p.sub_(step * d)
        return flat

    h = 1e-5
    finite = (shifted_gradient(h) - shifted_gradient(-h)) / (2 * h)
    torch.testing.assert_close(exact, finite, rtol=1e-5, atol=1e-6 * exact.abs().max().item())


def test_every_model_has_a_nonzero_input_gradient(small_model):
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    loss = nn.functional.cross_entropy(small_model.eval()(x), torch.tensor([1, 2]))
    (grad,) = torch.autograd.grad(loss, x)
    assert grad.abs().sum(dim=(1, 2, 3)).min() > 0


def test_features_and_classifier_reproduce_forward(small_model):
    small_model.eval()
    x = torch.rand(2, 3, 32, 32)
    features = small_model.features(x)  # (B, D)
    assert features.shape == (2, small_model.feature_dim)
    assert isinstance(small_model.classifier, nn.Linear)
    torch.testing.assert_close(small_model.classifier(features), small_model(x))
    # the rotation head on the penultimate features, as self-supervised training builds it
    head = rotation_head(small_model.feature_dim, 256)
    assert head(features).shape == (2, 4)


@pytest.mark.parametrize("target", REGISTERED, ids=NAMES)
def test_state_dict_round_trip_restores_outputs_and_whitening(target):
    trained = small(target, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3]).eval()
    rebuilt = small(target)  # whitening statistics come back from the state dict
    rebuilt.load_state_dict(trained.state_dict())
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(rebuilt.eval()(x), trained(x))
