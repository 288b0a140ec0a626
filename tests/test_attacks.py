"""Input attacks PGD, FGSM, none: closed-form optima, box ∩ ball, best iterate, restarts, safety."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor, nn

import advflat.core.config  # noqa: F401  (registers the ${div:...} resolver)
from advflat.attacks.base import cross_entropy
from advflat.attacks.fgsm import FGSM
from advflat.attacks.none import NoAttack
from advflat.attacks.norms import INITS, NORMS
from advflat.attacks.pgd import PGD
from tests.conftest import CONF, TinyNet

EPSILON = 0.05
INIT_NAMES = sorted(INITS)


# ---- fixtures: tiny models with known answers ---------------------------------------------------
def linear_problem(
    batch: int = 6, dtype: torch.dtype = torch.float32
) -> tuple[nn.Module, Tensor, Tensor]:
    """f(x) = Wx + b with two classes; inputs well inside the box so only the ball binds."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).to(dtype)
    x = 0.4 + 0.2 * torch.rand(batch, 1, 4, 4, dtype=dtype)
    y = torch.randint(0, 2, (batch,))
    return model, x, y


def ascent_direction(model: nn.Module, y: Tensor) -> Tensor:
    """w_other − w_y per example, shaped like the inputs (B, 1, 4, 4): CE grows along it."""
    W = model[1].weight.detach()  # (2, 16)
    return (W[1 - y] - W[y]).view(-1, 1, 4, 4)


def conv_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)
    ).eval()


def edge_inputs(batch: int = 8) -> tuple[Tensor, Tensor]:
    """Random inputs with whole rows at exactly 0 and 1 (where the box binds)."""
    x = torch.rand(batch, 1, 4, 4)
    x[:, :, 0] = 0.0
    x[:, :, 1] = 1.0
    return x, torch.randint(0, 3, (batch,))


class Wavy(nn.Module):
    """Logits oscillate fast in x: signed steps overshoot, so the loss is not monotone."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(16))

    def forward(self, x: Tensor) -> Tensor:
        s = 20.0 * x.flatten(1) @ self.w  # (B,)
        return 3.0 * torch.stack([torch.sin(s), torch.cos(s)], dim=1)  # (B, 2)


def kl_objective(logits: Tensor, probabilities: Tensor) -> Tensor:
    """TRADES' attack objective KL(p || softmax(logits)) with a (B, K) probability target."""
    return F.kl_div(F.log_softmax(logits, dim=1), probabilities, reduction="none").sum(dim=1)


# ---- closed forms ----------------------------------------------------------------------------
@pytest.mark.parametrize("init", INIT_NAMES)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize(("restarts", "best"), [(1, True), (1, False), (3, True)])
def test_linf_pgd_matches_closed_form_on_linear_model(init, momentum, restarts, best):
    model, x, y = linear_problem()
    attack = PGD(
        epsilon=EPSILON, step_size=0.02, steps=10, restarts=restarts, init=init,
        momentum=momentum, best=best,
    )  # fmt: skip
    expected = x + EPSILON * ascent_direction(model, y).sign()
    torch.testing.assert_close(attack(model, x, y), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("init", INIT_NAMES)
@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_l2_pgd_matches_closed_form_on_linear_model(init, momentum):
    # float64: in float32 the CE gradient's direction is only good to ~1e-5 (1 − p_y cancels).
    model, x, y = linear_problem(dtype=torch.float64)
    # A step of 10ε shrinks the component orthogonal to the optimum ~10× per projection.
    attack = PGD(
        epsilon=EPSILON, step_size=10 * EPSILON, steps=10, restarts=1, norm="l2", init=init,
        momentum=momentum,
    )  # fmt: skip
    v = ascent_direction(model, y)
    expected = x + EPSILON * v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(attack(model, x, y), expected, atol=1e-6, rtol=0)


def test_unnormalized_pgd_steps_along_the_raw_gradient():
    model, x, y = linear_problem()
    step = 0.01  # small enough that the ball does not bind
    attack = PGD(
        epsilon=EPSILON, step_size=step, steps=1, init="zero", normalized=False, restarts=1
    )
    with torch.no_grad():
        p = F.softmax(model(x), dim=1)  # (B, 2)
    # d CE / dx = Σ_k (p_k − 1[k = y]) w_k
    gradient = ((p - F.one_hot(y, 2)) @ model[1].weight).view_as(x)
    out = attack(model, x, y)
    assert (out - x).abs().max() < EPSILON  # the known answer is not a projection artefact
    torch.testing.assert_close(out, x + step * gradient, atol=1e-6, rtol=0)


@pytest.mark.parametrize("norm", sorted(NORMS))
def test_fgsm_from_zero_reaches_the_closed_form_optimum(norm):
    model, x, y = linear_problem()
    v = ascent_direction(model, y)
    expected = x + EPSILON * NORMS[norm].ascent_direction(v)
    torch.testing.assert_close(
        FGSM(epsilon=EPSILON, norm=norm)(model, x, y), expected, atol=1e-6, rtol=0
    )


def test_fast_fgsm_steps_one_and_a_quarter_epsilon_from_a_uniform_start():
    model, x, y = linear_problem()
    torch.manual_seed(1)
    start = NORMS["linf"].sample_uniform(x, EPSILON)
    torch.manual_seed(1)
    out = FGSM(epsilon=EPSILON, init="uniform")(model, x, y)
    step = 1.25 * EPSILON * ascent_direction(model, y).sign()
    torch.testing.assert_close(out, x + (start + step).clamp(-EPSILON, EPSILON), atol=1e-6, rtol=0)
    assert ((out - x).abs() < EPSILON - 1e-4).any()  # not simply the FGSM optimum


def test_pgd_works_when_called_under_no_grad():
    # Evaluation code calls attacks inside torch.no_grad(); the input gradient must still flow.
    model, x, y = linear_problem()
    with torch.no_grad():
        out = PGD(epsilon=EPSILON, step_size=0.02, steps=10, restarts=1)(model, x, y)
    torch.testing.assert_close(
        out, x + EPSILON * ascent_direction(model, y).sign(), atol=1e-6, rtol=0
    )


def test_kl_objective_with_probability_targets_reaches_an_extreme_point():
    # KL(p || q(x + δ)) of a linear two-class model is convex in the margin shift v·δ and 0 at
    # δ = 0, so ascent from a random start ends at x ± ε·sign(v), the side it started on.
    model, x, _ = linear_problem()
    with torch.no_grad():
        p = F.softmax(model(x), dim=1)  # (B, 2): the target is not a label tensor
    out = PGD(epsilon=EPSILON, step_size=0.02, steps=10, restarts=1)(model, x, p, kl_objective)
    sign_v = (model[1].weight[1] - model[1].weight[0]).detach().sign().view(1, 1, 4, 4)
    side = ((out - x) * sign_v).flatten(1).sum(dim=1).sign().view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    torch.testing.assert_close(out, x + side * EPSILON * sign_v, atol=1e-6, rtol=0)
    with torch.no_grad():
        assert (kl_objective(model(out), p) > 0).all()


# ---- constraints ----------------------------------------------------------------------------
@pytest.mark.parametrize("norm", sorted(NORMS))
@pytest.mark.parametrize("init", INIT_NAMES)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("normalized", [True, False])
def test_pgd_stays_in_box_and_ball(norm, init, momentum, normalized):
    model = conv_net()
    x, y = edge_inputs()
    epsilon = {"linf": 0.1, "l2": 0.5}[norm]
    attack = PGD(
        epsilon=epsilon, step_size=epsilon, steps=3, restarts=2, norm=norm, init=init,
        momentum=momentum, normalized=normalized,
    )  # fmt: skip
    out = attack(model, x, y)
    assert out.shape == x.shape and not out.requires_grad
    assert out.min() >= 0 and out.max() <= 1
    assert (NORMS[norm](out - x) <= epsilon * (1 + 1e-5)).all()
    assert not torch.equal(out, x)  # it did move


@pytest.mark.parametrize("norm", sorted(NORMS))
@pytest.mark.parametrize("init", ["zero", "uniform"])
def test_fgsm_stays_in_box_and_ball(norm, init):
    x, y = edge_inputs()
    out = FGSM(epsilon=0.1, norm=norm, init=init)(conv_net(), x, y)
    assert out.min() >= 0 and out.max() <= 1
    assert (NORMS[norm](out - x) <= 0.1 * (1 + 1e-5)).all()
    assert not torch.equal(out, x)


@pytest.mark.parametrize("norm", sorted(NORMS))
@pytest.mark.parametrize("init", INIT_NAMES)
def test_random_starts_lie_in_the_ball(norm, init):
    like = torch.zeros(64, 1, 4, 4)
    delta = INITS[init](NORMS[norm], like, EPSILON)
    assert delta.shape == like.shape
    assert (NORMS[norm](delta) <= EPSILON * (1 + 1e-5)).all()
    assert torch.equal(delta, like) == (init == "zero")


@pytest.mark.parametrize(
    ("norm", "init", "mean_radius"),
    [
        ("linf", "uniform_norm", 0.5),  # radius u·ε, u ~ U[0, 1]
        ("l2", "uniform_norm", 0.5),
        ("l2", "uniform", 16 / 17),  # uniform in the 16-d ball: E[r] = ε·d/(d+1)
    ],
)
def test_random_start_radii_have_the_expected_mean(norm, init, mean_radius):
    radii = NORMS[norm](INITS[init](NORMS[norm], torch.zeros(4000, 1, 4, 4), 1.0))
    assert abs(radii.mean().item() - mean_radius) < 0.02


# ---- best iterate and restarts ----------------------------------------------------------------
def recorded_forwards(model: nn.Module) -> list[Tensor]:
    inputs: list[Tensor] = []
    model.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().clone()))
    return inputs


@pytest.mark.parametrize("restarts", [1, 3])
def test_best_iterate_is_the_highest_loss_over_every_iterate(restarts):
    model, y = Wavy(), torch.randint(0, 2, (16,))
    x = torch.rand(16, 1, 4, 4)
    inputs = recorded_forwards(model)
    out = PGD(epsilon=0.1, step_size=0.05, steps=5, restarts=restarts)(model, x, y)
    # Every iterate of every restart: start, 4 intermediate, final (the one extra forward).
    assert len(inputs) == restarts * 6
    iterates = list(inputs)  # a copy: the hook keeps recording the forwards below
    with torch.no_grad():
        losses = torch.stack([cross_entropy(model(i), y) for i in iterates])  # (T, B)
        returned = cross_entropy(model(out), y)  # (B,)
    torch.testing.assert_close(returned, losses.max(dim=0).values)
    final = losses[5::6].max(dim=0).values  # the best final iterate over restarts
    assert (returned > final + 1e-3).any()  # this model makes the selection matter


def test_without_best_the_final_iterate_is_returned_without_an_extra_forward():
    model, y = Wavy(), torch.randint(0, 2, (16,))
    x = torch.rand(16, 1, 4, 4)
    inputs = recorded_forwards(model)
    torch.manual_seed(3)
    out = PGD(epsilon=0.1, step_size=0.05, steps=5, best=False, restarts=1)(model, x, y)
    assert len(inputs) == 5
    torch.manual_seed(3)
    with_best = PGD(epsilon=0.1, step_size=0.05, steps=5, restarts=1)(model, x, y)
    assert len(inputs) == 11  # same start; the final iterate is the 6th forward of this run
    torch.testing.assert_close(out, inputs[-1])
    assert not torch.equal(out, with_best)


@pytest.mark.parametrize("best", [True, False])
def test_restarts_never_decrease_the_per_example_loss(best):
    model = conv_net()
    x, y = edge_inputs(32)
    kwargs = {"epsilon": 0.1, "step_size": 0.03, "steps": 2, "best": best}
    torch.manual_seed(5)
    one = PGD(restarts=1, **kwargs)(model, x, y)
    torch.manual_seed(5)  # the first of the five restarts is the single run above
    five = PGD(restarts=5, **kwargs)(model, x, y)
    with torch.no_grad():
        loss_one, loss_five = cross_entropy(model(one), y), cross_entropy(model(five), y)
    assert (loss_five >= loss_one - 1e-6).all()
    assert (loss_five > loss_one + 1e-4).any()


# ---- the model is left alone ------------------------------------------------------------------
ATTACKS = [
    PGD(epsilon=0.1, step_size=0.03, steps=3, restarts=2),
    PGD(epsilon=0.5, step_size=0.2, steps=3, norm="l2", init="uniform", momentum=0.5, restarts=1),
    FGSM(epsilon=0.1, init="uniform"),
    NoAttack(),
]


@pytest.mark.parametrize("attack", ATTACKS, ids=repr)
@pytest.mark.parametrize("training", [True, False])
def test_attacks_leave_parameters_flags_grads_and_mode_untouched(attack, training):
    model = TinyNet().train(training)
    model.head.bias.requires_grad_(False)
    model.body[1].weight.grad = torch.ones_like(model.body[1].weight)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    attack(model, x, y)
    assert model.training is training
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name
        assert p.requires_grad is flags[name], name
        expected_grad = torch.ones_like(p) if name == "body.1.weight" else None
        assert (p.grad is None) if expected_grad is None else torch.equal(p.grad, expected_grad)


def test_no_attack_returns_the_inputs_without_running_the_model():
    class Exploding(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            raise AssertionError("NoAttack ran the model")

    x = torch.rand(4, 1, 4, 4, requires_grad=True)
    out = NoAttack()(Exploding(), x, torch.zeros(4, dtype=torch.long))
    assert torch.equal(out, x) and not out.requires_grad


# ---- arguments, configs, logs -------------------------------------------------------------------
PGD_ARGS = {"epsilon": 0.1, "step_size": 0.01, "steps": 3, "restarts": 1}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("epsilon", 0.0),
        ("epsilon", -1.0),
        ("step_size", 0.0),
        ("steps", 0),
        ("restarts", 0),
        ("norm", "l1"),
        ("init", "gaussian"),
        ("momentum", 1.0),
        ("momentum", -0.1),
    ],
)
def test_pgd_rejects_bad_arguments_naming_the_parameter(name, value):
    with pytest.raises(ValueError, match=f"^{name} must be"):
        PGD(**{**PGD_ARGS, name: value})


@pytest.mark.parametrize(("name", "value"), [("epsilon", -0.1), ("norm", "l1"), ("init", "x")])
def test_fgsm_rejects_bad_arguments_naming_the_parameter(name, value):
    with pytest.raises(ValueError, match=f"^{name} must be"):
        FGSM(**{"epsilon": 0.1, name: value})


def load_option(name: str) -> dict:
    node = OmegaConf.load(CONF / "attack" / f"{name}.yaml")
    return OmegaConf.to_container(node, resolve=True)


def test_pgd_config_is_the_papers_training_attack():
    options = load_option("pgd")
    assert options.pop("_target_") == "advflat.attacks.PGD"
    attack = PGD(**options)
    assert attack.epsilon == pytest.approx(8 / 255)
    assert (attack.step_size, attack.steps, attack.restarts) == (0.007, 7, 1)
    assert (attack.norm, attack.init, attack.momentum) == ("linf", "uniform_norm", 0.0)
    assert attack.normalized and attack.best


def test_fgsm_and_none_configs_build():
    fgsm, none = load_option("fgsm"), load_option("none")
    assert fgsm.pop("_target_") == "advflat.attacks.FGSM"
    assert none.pop("_target_") == "advflat.attacks.NoAttack"
    assert FGSM(**fgsm).epsilon == pytest.approx(8 / 255)
    NoAttack(**none)


def test_repr_shows_the_constructor_arguments():
    assert repr(PGD(**PGD_ARGS)) == (
        "PGD(epsilon=0.1, step_size=0.01, steps=3, restarts=1, norm='linf', "
        "init='uniform_norm', momentum=0.0, normalized=True, best=True)"
    )
    assert repr(FGSM(epsilon=0.1)) == "FGSM(epsilon=0.1, norm='linf', init='zero')"
    assert repr(NoAttack()) == "NoAttack()"
