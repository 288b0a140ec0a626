"""The one weight ascent (advflat.weights.ascent) and the joint attack's per-batch protocol,
against closed forms and a plain reference loop written here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torch import nn

from advflat.attacks.pgd import PGD
from advflat.core.config import build
from advflat.evaluation.flatness import WorstCaseFlatness, measure_flatness
from advflat.weights import SAMPLERS, JointWeightInputAttack, RelativeBall, perturbed, set_loss
from advflat.weights.ascent import Probe, ascend, schedule, start
from tests.conftest import CONF, TinyNet, blobs

XI, PASSES, WEIGHT_LR, INPUT_LR, EPSILON = 0.05, 20, 0.01, 0.007, 0.1


class MLP(nn.Module):
    """Two linear layers on (B, 1, 4, 4): the selected weights are fc1.weight and fc2.weight."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def tiny_model() -> MLP:
    torch.manual_seed(3)
    return MLP().double().eval()


def batches_of(n: int, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    split = blobs(n, torch.Generator().manual_seed(5))
    return [(x.double(), y) for x, y in split.batches(size)]


def reference_per_batch(model: MLP, batches, xi, passes, weight_lr, input_lr, epsilon):
    """The per-batch protocol written out: ν = 0 and δ = 0 at the start; after every batch one
    step on ν (gradient · ||w|| / ||g|| per layer, then ν · min(1, ξ||w|| / ||ν||)) and one
    signed step on that batch's δ (clamped to [−ε, ε] and to the box). Returns the last ν, the
    last inputs and the mean of the per-example losses of the last pass."""
    w1, b1 = model.fc1.weight.detach(), model.fc1.bias.detach()
    w2, b2 = model.fc2.weight.detach(), model.fc2.bias.detach()
    nu = [torch.zeros_like(w1), torch.zeros_like(w2)]
    x_adv = [x.clone() for x, _ in batches]
    for _ in range(passes):
        last_pass = []
        for b, (x, y) in enumerate(batches):
            v1 = (w1 + nu[0]).requires_grad_(True)
            v2 = (w2 + nu[1]).requires_grad_(True)
            xb = x_adv[b].clone().requires_grad_(True)
            logits = torch.relu(xb.flatten(1) @ v1.T + b1) @ v2.T + b2
            losses = F.cross_entropy(logits, y, reduction="none")
            g1, g2, gx = torch.autograd.grad(losses.sum(), [v1, v2, xb])
            last_pass.append(losses.detach())
            for i, (g, w) in enumerate(zip((g1, g2), (w1, w2), strict=True)):
                stepped = nu[i] + weight_lr * g * w.norm() / g.norm()
                nu[i] = stepped * torch.clamp(xi * w.norm() / stepped.norm(), max=1.0)
            delta = (x_adv[b] + input_lr * gx.sign() - x).clamp(-epsilon, epsilon)
            x_adv[b] = (x + delta).clamp(0, 1)
    return nu, x_adv, torch.cat(last_pass).mean().item()


def per_batch_attack(**options) -> JointWeightInputAttack:
    given = {
        "xi": XI,
        "steps": PASSES,
        "weight_lr": WEIGHT_LR,
        "input_lr": INPUT_LR,
        "epsilon": EPSILON,
        "protocol": "per_batch",
        "init": "zero",
        "input_init": "zero",
    }
    return JointWeightInputAttack(**{**given, **options})


def test_per_batch_joint_attack_matches_the_reference_loop_over_three_batches():
    model, batches = tiny_model(), batches_of(24, 8)
    nu, x_adv, loss = reference_per_batch(model, batches, XI, PASSES, WEIGHT_LR, INPUT_LR, EPSILON)
    result = per_batch_attack()(model, batches)
    for got, expected in zip(result.nu, nu, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert result.inputs is not None
    for got, expected in zip(result.inputs, x_adv, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert result.loss == pytest.approx(loss, rel=1e-10)
    assert result.use_loss  # flatness takes the last pass's losses as they were measured


def test_per_batch_joint_attack_regroups_the_callers_batches_into_its_own():
    # One batch of 24 from the caller, attacked 8 at a time = the reference over 3 batches of 8;
    # the inputs come back as the caller's one batch.
    model = tiny_model()
    nu, x_adv, loss = reference_per_batch(
        model, batches_of(24, 8), XI, PASSES, WEIGHT_LR, INPUT_LR, EPSILON
    )
    result = per_batch_attack(batch_size=8)(model, batches_of(24, 24))
    for got, expected in zip(result.nu, nu, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert result.inputs is not None and len(result.inputs) == 1
    torch.testing.assert_close(result.inputs[0], torch.cat(x_adv), rtol=1e-10, atol=1e-12)
    assert result.loss == pytest.approx(loss, rel=1e-10)


def test_per_batch_joint_attack_stays_in_both_balls_and_restores_the_model():
    model, batches = tiny_model(), batches_of(24, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = per_batch_attack(init="uniform_norm", input_init="uniform_norm")(model, batches)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    ball = RelativeBall(result.layers.weights(), XI)
    assert all(r <= XI * (1 + 1e-9) for r in ball.relative_norms(result.nu))
    assert result.inputs is not None
    for (x, _), x_adv in zip(batches, result.inputs, strict=True):
        assert (x_adv - x).abs().max() <= EPSILON + 1e-12
        assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_flatness_uses_the_per_batch_attacks_last_pass_loss():
    model, batches = tiny_model(), batches_of(24, 8)
    *_, loss = reference_per_batch(model, batches, XI, PASSES, WEIGHT_LR, INPUT_LR, EPSILON)
    measured = measure_flatness(
        model, batches, kind="worst", weight_attack=per_batch_attack(), attempts=1, reference=0.0
    )
    assert measured["losses"][0] == pytest.approx(loss, rel=1e-10)


def test_full_set_joint_attack_reports_the_loss_at_its_returned_point():
    model, batches = tiny_model(), batches_of(24, 8)
    result = per_batch_attack(protocol="full_set")(model, batches)
    assert not result.use_loss
    with perturbed(model, result.layers, result.nu):
        at_result = set_loss(model, batches, inputs=result.inputs).item()
    assert result.loss == pytest.approx(at_result, rel=1e-10)


@pytest.mark.parametrize(("protocol", "marker"), [("per_batch", 1.0), ("full_set", 0.0)])
def test_worst_case_robust_metric_records_xi_and_the_protocol(tiny_data, protocol, marker):
    metric = WorstCaseFlatness(
        loss="robust",
        weight_attack=JointWeightInputAttack(
            xi=0.01, steps=1, weight_lr=0.01, input_lr=0.007, epsilon=0.1, protocol=protocol
        ),
        reference_attack=PGD(epsilon=0.1, step_size=0.03, steps=1, restarts=1),
        attempts=1,
        first=8,
    )
    metrics = metric(TinyNet().eval(), tiny_data, {})
    assert metrics["flatness/worst/robust/xi"] == 0.01
    assert metrics["flatness/worst/robust/per_batch"] == marker
    assert all(type(v) is float for v in metrics.values())


def test_bad_joint_protocol_options_are_rejected_with_their_name():
    with pytest.raises(ValueError, match="^protocol must be one of"):
        per_batch_attack(protocol="per_example")
    with pytest.raises(ValueError, match="^batch_size must be >= 1"):
        per_batch_attack(batch_size=0)


def compose_evaluation(evaluation: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[f"evaluation={evaluation}", *overrides]).evaluation


@pytest.mark.parametrize("evaluation", ["paper", "study"])
def test_paper_and_study_evaluations_use_the_per_batch_protocol_at_the_plots_xi(evaluation):
    node = compose_evaluation(evaluation).metrics.flatness_worst_robust
    attack = build(node.weight_attack)
    assert isinstance(attack, JointWeightInputAttack)
    assert attack.protocol == "per_batch"
    assert (attack.xi, attack.steps, attack.batch_size) == (0.00075, 20, 128)
    assert (attack.weight_lr, attack.input_lr, attack.epsilon) == (0.01, 0.007, 8 / 255)


def test_the_readme_xi_and_the_full_set_protocol_are_overrides():
    key = "evaluation.metrics.flatness_worst_robust.weight_attack"
    node = compose_evaluation("paper", f"{key}.xi=0.003", f"{key}.protocol=full_set")
    attack = build(node.metrics.flatness_worst_robust.weight_attack)
    assert (attack.xi, attack.protocol) == (0.003, "full_set")


# ---- the shared ascent itself --------------------------------------------------------------


def test_schedule_lists_the_batches_of_every_step():
    assert schedule(3, 2, per_batch=False) == [range(3), range(3)]
    assert schedule(3, 2, per_batch=True) == [range(b, b + 1) for b in (0, 1, 2, 0, 1, 2)]
    assert schedule(1, 0, per_batch=False) == []


def linear_probe(direction: torch.Tensor):
    """The objective a·ν (constant gradient a) for one tensor."""

    def probe(_: range, nu: list[torch.Tensor]) -> Probe:
        return Probe((direction * nu[0]).sum(), [direction.clone()])

    return probe


def test_ascent_on_a_linear_objective_ends_at_the_balls_maximiser():
    # max a·ν over ||ν|| <= ξ||w|| is ξ||w||·a/||a||; each step moves lr·||w|| along a.
    w = torch.tensor([3.0, 4.0], dtype=torch.float64)  # ||w|| = 5
    a = torch.tensor([1.0, -2.0], dtype=torch.float64)
    ball = RelativeBall([w], 0.1)
    one = ascend([torch.zeros_like(w)], linear_probe(a), ball=ball, lr=0.02, steps=[range(1)],
                 iterate="last").nu[0]  # fmt: skip
    torch.testing.assert_close(one, 0.02 * 5 * a / a.norm())
    many = ascend([torch.zeros_like(w)], linear_probe(a), ball=ball, lr=0.02,
                  steps=[range(1)] * 10, iterate="last").nu[0]  # fmt: skip
    torch.testing.assert_close(many, 0.1 * 5 * a / a.norm())


def test_best_iterate_returns_the_start_when_every_step_goes_down():
    # The "gradient" points away from a: every step lowers a·ν, so ν₀ is the best iterate.
    w = torch.tensor([3.0, 4.0], dtype=torch.float64)
    a = torch.tensor([1.0, 0.0], dtype=torch.float64)
    ball = RelativeBall([w], 0.1)
    nu0 = [torch.tensor([0.2, 0.0], dtype=torch.float64)]

    def probe(_: range, nu: list[torch.Tensor]) -> Probe:
        return Probe((a * nu[0]).sum(), [-a], state="at this ν")

    def evaluate(nu: list[torch.Tensor]) -> tuple[torch.Tensor, str]:
        return (a * nu[0]).sum(), "last"

    result = ascend(nu0, probe, ball=ball, lr=0.01, steps=[range(1)] * 3, iterate="best",
                    evaluate=evaluate)  # fmt: skip
    assert torch.equal(result.nu[0], nu0[0])
    assert (result.loss, result.state) == (pytest.approx(0.2), "at this ν")
    with pytest.raises(ValueError, match="^evaluate is required"):
        ascend(nu0, probe, ball=ball, lr=0.01, steps=[range(1)], iterate="best")
    with pytest.raises(ValueError, match="^iterate must be one of"):
        ascend(nu0, probe, ball=ball, lr=0.01, steps=[range(1)], iterate="first")


def test_average_hook_sees_every_gradient_before_the_step():
    # A collective that replaces the gradient by e₂: the step then goes along e₂, not a.
    w = torch.tensor([3.0, 4.0], dtype=torch.float64)
    e2 = torch.tensor([0.0, 1.0], dtype=torch.float64)
    seen = []

    def to_e2(gradients: list[torch.Tensor]) -> None:
        seen.append(gradients[0].clone())
        gradients[0].copy_(e2)

    a = torch.tensor([1.0, 0.0], dtype=torch.float64)
    result = ascend([torch.zeros_like(w)], linear_probe(a), ball=RelativeBall([w], 0.1),
                    lr=0.01, steps=[range(1)] * 2, iterate="last", average=to_e2)  # fmt: skip
    assert [g.tolist() for g in seen] == [[1.0, 0.0], [1.0, 0.0]]
    torch.testing.assert_close(result.nu[0], 2 * 0.01 * 5 * e2)


def test_start_projects_and_broadcasts_only_when_asked(monkeypatch):
    w = torch.tensor([3.0, 4.0], dtype=torch.float64)
    ball = RelativeBall([w], 0.1)  # radius 0.5
    outside = torch.tensor([0.0, 2.0], dtype=torch.float64)
    monkeypatch.setitem(SAMPLERS, "zero", lambda ball: [outside.clone()])
    broadcast = []
    assert torch.equal(start(ball, "zero", project=False)[0], outside)
    projected = start(ball, "zero", project=True, broadcast=broadcast.append)
    torch.testing.assert_close(projected[0], torch.tensor([0.0, 0.5], dtype=torch.float64))
    assert broadcast == [projected]
