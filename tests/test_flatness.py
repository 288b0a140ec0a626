"""Average- and worst-case flatness (docs/flatness.md): closed forms on a quadratic, scale
invariance,
bitwise restoration, metric keys and argument checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advflat.attacks.pgd import PGD
from advflat.data.base import select
from advflat.evaluation.flatness import (
    AverageCaseFlatness,
    WorstCaseFlatness,
    flatness,
    measure_flatness,
)
from advflat.weights import (
    AdversarialWeightAttack,
    JointWeightInputAttack,
    RandomWeightAttack,
    WeightAttack,
)
from benchmarks.flatness import bench_flatness, paper_flatness_metrics
from tests.conftest import TinyNet, blobs
from tests.forwards import ForwardsByWeights

# The tests' weight attacks: radii chosen per test, the ascent of
# conf/weight_attack/{adversarial,joint}.yaml.
XI = {"average": 0.5, "worst": 0.003}
ASCENT = {"steps": 20, "lr": 0.01}
JOINT = {"steps": 20, "weight_lr": 0.01, "input_lr": 0.007}


def weights_for(kind: str, xi: float, loss: str = "clean", epsilon: float = 0.1) -> WeightAttack:
    """Random on the sphere (average case), gradient ascent (worst case; joint with the inputs
    for the robust loss)."""
    if kind == "average":
        return RandomWeightAttack(xi=xi)
    if loss == "robust":
        return JointWeightInputAttack(xi=xi, epsilon=epsilon, **JOINT)
    return AdversarialWeightAttack(xi=xi, **ASCENT)


def reference_pgd(epsilon: float = 0.1) -> PGD:
    return PGD(epsilon=epsilon, step_size=0.007, steps=20, restarts=10)


class Quadratic(nn.Module):
    """A "model" whose loss is ½wᵀHw for every example (read out by ``quadratic_loss``)."""

    def __init__(self, H: torch.Tensor, w: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("H", H)
        self.w = nn.Parameter(w.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = 0.5 * self.w @ self.H @ self.w
        return q.expand(x.shape[0], 1)  # (B, 1)


def quadratic_loss(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return output[:, 0]


def quadratic_batches():
    return [(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))]


def data(n: int = 32):
    split = blobs(n, torch.Generator().manual_seed(2))
    return split.x, split.y


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_average_case_flatness_of_a_quadratic_matches_the_closed_form():
    # ν uniform on the sphere of radius r: E[½(w+ν)ᵀH(w+ν) − ½wᵀHw] = ½·r²·tr(H)/d.
    A = torch.randn(5, 5, dtype=torch.float64)
    H = A @ A.T + torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))
    w = torch.randn(5, dtype=torch.float64)
    xi, attempts = 0.5, 2000
    result = measure_flatness(
        Quadratic(H, w),
        quadratic_batches(),
        kind="average",
        weight_attack=RandomWeightAttack(xi=xi),
        attempts=attempts,
        objective=quadratic_loss,
    )
    expected = 0.5 * (xi * w.norm()) ** 2 * H.trace() / 5
    assert abs(result["value"] - expected.item()) < 5 * result["std"] / attempts**0.5
    assert result["reference"] == pytest.approx((0.5 * w @ H @ w).item())


def test_worst_case_flatness_of_a_quadratic_finds_the_trust_region_maximum():
    # w along H's top eigenvector: max over ||ν|| <= r of wᵀHν + ½νᵀHν is at ν = r·w/||w||,
    # here 8·1 + ½·4·1 = 10 (r = ξ||w|| = 1).
    H = torch.diag(torch.tensor([4.0, 2.0, 1.0, 0.5, 0.25], dtype=torch.float64))
    w = torch.tensor([2.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    result = measure_flatness(
        Quadratic(H, w),
        quadratic_batches(),
        kind="worst",
        weight_attack=AdversarialWeightAttack(xi=0.5, steps=50, lr=0.1),
        attempts=3,
        objective=quadratic_loss,
    )
    assert result["value"] == pytest.approx(10.0, abs=1e-3)
    assert result["value"] == max(result["attempts"])


def test_worst_case_is_at_least_the_average_case_at_the_same_radius():
    model = TinyNet().eval()
    x, y = data()
    average = flatness(
        model, x, y, kind="average", weight_attack=weights_for("average", 0.05), attempts=5
    )
    worst = flatness(
        model, x, y, kind="worst", weight_attack=weights_for("worst", 0.05), attempts=2
    )
    assert worst["value"] >= average["value"]
    assert worst["value"] > 0


class ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def rescale_conv(model: ConvBN, c: float) -> None:
    """Scale the conv by c and BN's running statistics (and ε) with it: the same function."""
    with torch.no_grad():
        model.conv.weight.mul_(c)
        model.bn.running_mean.mul_(c)
        model.bn.running_var.mul_(c * c)
    model.bn.eps *= c * c


@pytest.mark.parametrize("kind", ["average", "worst"])
def test_relative_flatness_is_invariant_to_rescaling_a_conv_followed_by_batch_norm(kind):
    # c a power of two: every product is exact, so even the random draws scale bitwise.
    model, (x, y) = ConvBN(), data()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)  # non-trivial running statistics
    model.eval()
    measures = []
    for c in (1.0, 4.0):
        rescale_conv(model, c)
        torch.manual_seed(0)
        measures.append(
            flatness(model, x, y, kind=kind, weight_attack=weights_for(kind, 0.3), attempts=3)
        )
    for key in ("reference", "value"):
        assert measures[1][key] == pytest.approx(measures[0][key], rel=1e-6, abs=1e-9)
    assert abs(measures[0]["value"]) > 1e-4  # the perturbations did change the loss


@pytest.mark.parametrize(
    ("kind", "loss"), [("average", "clean"), ("worst", "clean"), ("average", "robust")]
)
def test_flatness_restores_parameters_bitwise_and_the_mode(kind, loss):
    model, (x, y) = TinyNet().train(), data()
    before = state(model)
    attack = PGD(epsilon=0.1, step_size=0.03, steps=2, restarts=1)
    result = flatness(
        model, x, y, kind=kind, loss=loss, weight_attack=weights_for(kind, XI[kind]), attempts=2,
        attack=attack, reference_attack=attack,
    )  # fmt: skip
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # BN running stats included: eval mode
    assert model.training
    assert len(result["attempts"]) == 2
    assert result["std"] >= 0


def test_worst_case_robust_flatness_uses_the_joint_attack_against_a_stronger_reference():
    model, (x, y) = TinyNet().eval(), data()
    before = state(model)
    joint = weights_for("worst", 0.01, loss="robust", epsilon=0.1)
    result = flatness(
        model, x, y, kind="worst", loss="robust", weight_attack=joint, attempts=2,
        reference_attack=reference_pgd(0.1),
    )  # fmt: skip
    average = weights_for("average", 1e-6)
    clean = flatness(model, x, y, kind="average", weight_attack=average, attempts=1)["reference"]
    assert result["reference"] > clean  # the PGD reference is a robust loss
    assert result["value"] == max(result["attempts"])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_flatness_with_the_paper_settings_read_from_the_yaml():
    metric = paper_flatness_metrics()[("average", "clean")]
    model, (x, y) = TinyNet().eval(), data(8)
    result = flatness(
        model, x, y, kind="average", weight_attack=metric.weight_attack, attempts=metric.attempts
    )
    assert len(result["attempts"]) == 10  # conf/evaluation/paper.yaml
    assert result["value"] == pytest.approx(sum(result["attempts"]) / 10)
    for a, loss in zip(result["attempts"], result["losses"], strict=True):
        assert a == pytest.approx(loss - result["reference"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": 0}, "attempts must be >= 1"),
        ({"kind": "best"}, "kind must be one of"),
        ({"loss": "adversarial"}, "loss must be one of"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"loss": "robust"}, "attack is required"),
        ({"weight_attack": weights_for("worst", 0.1, loss="robust")}, "loss must be 'robust'"),
    ],
)
def test_flatness_rejects_bad_values_with_a_clear_message(kwargs, message):
    x, y = data(4)
    given = {"kind": "average", "weight_attack": weights_for("average", 0.5), "attempts": 1}
    with pytest.raises(ValueError, match=f"^{message}"):
        flatness(TinyNet(), x, y, **{**given, **kwargs})


def test_average_case_metric_returns_flat_keys_with_attempts_and_std(tiny_data):
    metric = AverageCaseFlatness(
        weight_attack=weights_for("average", 0.5), attempts=3, first=None, batch_size=20
    )
    metrics = metric(TinyNet().eval(), tiny_data, {})
    prefix = "flatness/average/clean"
    expected = {prefix, f"{prefix}/std", f"{prefix}/reference"}
    expected |= {f"{prefix}/attempt_{i}" for i in (1, 2, 3)}
    assert set(metrics) == expected
    assert all(type(v) is float for v in metrics.values())
    attempts = [metrics[f"{prefix}/attempt_{i}"] for i in (1, 2, 3)]
    assert metrics[prefix] == pytest.approx(sum(attempts) / 3)


def pgd_forwards(model: nn.Module, attack: PGD, x: torch.Tensor, y: torch.Tensor) -> int:
    """How many forwards one run of ``attack`` takes on (x, y)."""
    recorder = ForwardsByWeights(model)
    attack(model, x, y)
    recorder.stop()
    return recorder.count()


def test_worst_case_robust_metric_runs_the_joint_attack(tiny_data):
    steps, attempts = 2, 2
    joint = JointWeightInputAttack(
        xi=0.01, steps=steps, weight_lr=0.01, input_lr=0.007, epsilon=0.1
    )
    metric = WorstCaseFlatness(
        loss="robust",
        weight_attack=joint,
        reference_attack=PGD(epsilon=0.1, step_size=0.03, steps=3, restarts=2),
        attempts=attempts,
        first=20,
    )
    model = TinyNet().eval()
    clean = select(tiny_data, "test", 20).x
    recorder = ForwardsByWeights(model)
    metrics = metric(model, tiny_data, {})
    perturbed = recorder.perturbed()
    # Per attempt: a gradient pass at each of the `steps` iterates (w + ν, x + δ), the loss at
    # the last one, then the loss at the (ν, δ) the attack returns; ν moves at every step.
    assert sum(len(run.inputs) for run in perturbed) == attempts * (steps + 2)
    assert len(perturbed) >= attempts * (steps + 1)
    assert all(not torch.equal(x, clean) for run in perturbed for x in run.inputs)
    prefix = "flatness/worst/robust"
    assert metrics[prefix] == max(metrics[f"{prefix}/attempt_{i}"] for i in (1, 2))


def test_average_case_robust_metric_reruns_pgd_on_the_perturbed_model(tiny_data):
    attack = PGD(epsilon=0.1, step_size=0.03, steps=3, restarts=1)
    random = weights_for("average", 0.5)
    metric = AverageCaseFlatness(
        loss="robust", weight_attack=random, attack=attack, attempts=2, first=20
    )
    model = TinyNet().eval()
    examples = select(tiny_data, "test", 20)
    forwards = pgd_forwards(model, attack, examples.x, examples.y)
    recorder = ForwardsByWeights(model)
    metric(model, tiny_data, {})
    # Each attempt's own ν: the whole PGD on w + ν, then the loss at its adversarial examples.
    perturbed = recorder.perturbed()
    assert [len(run.inputs) for run in perturbed] == [forwards + 1, forwards + 1]
    assert all(not torch.equal(x, examples.x) for run in perturbed for x in run.inputs)


def average_metric(**options) -> AverageCaseFlatness:
    given = {"weight_attack": weights_for("average", 0.5), "attempts": 1, "first": 20}
    return AverageCaseFlatness(**{**given, **options})


def worst_metric(**options) -> WorstCaseFlatness:
    given = {"weight_attack": weights_for("worst", 0.003), "attempts": 1, "first": 20}
    return WorstCaseFlatness(**{**given, **options})


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: average_metric(attempts=0), "attempts must be >= 1"),
        (lambda: average_metric(loss="robust"), "attack is required"),
        (lambda: worst_metric(loss="robust"), "attack is required"),
        (
            lambda: worst_metric(
                loss="robust", weight_attack=weights_for("worst", 0.003, loss="robust")
            ),
            "reference_attack is required",
        ),
        (
            lambda: worst_metric(weight_attack=weights_for("worst", 0.003, loss="robust")),
            "loss must be 'robust'",
        ),
        (lambda: average_metric(split="val"), "split must be one of"),
        (lambda: worst_metric(first=0), "first must be >= 1"),
    ],
)
def test_flatness_metrics_reject_bad_values(factory, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        factory()


def test_bench_times_every_measure():
    x, y = data(8)
    seconds = bench_flatness(TinyNet(), x, y, lanczos_steps=2)
    assert set(seconds) == {
        "flatness/average/clean",
        "flatness/average/robust",
        "flatness/worst/clean",
        "flatness/worst/robust",
        "hessian/top_eigenvalue",
        "hessian/vector_product",
    }
    assert all(s > 0 for s in seconds.values())
