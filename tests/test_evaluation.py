"""The evaluation runner: the PGD reference shared by the metrics that need it (computed once),
one random stream per metric (switching one off leaves the others bitwise unchanged), and the
seconds each metric cost."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from advflat.attacks.base import Objective
from advflat.attacks.pgd import PGD
from advflat.data.base import ImageData, select
from advflat.evaluation import (
    AverageCaseFlatness,
    CleanPerformance,
    Evaluation,
    RobustPerformance,
    WorstCaseFlatness,
)
from advflat.evaluation.reference import reference_key, robust_losses
from advflat.evaluation.seeds import derived_seed, seeded_stream
from advflat.weights import JointWeightInputAttack, RandomWeightAttack
from tests.conftest import TinyNet

EPSILON = 0.1


class CountingPGD(PGD):
    """PGD that counts its calls per number of restarts (the reference has 3, the others 1)."""

    calls: dict[int, int] = {}

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, objective: Objective) -> Tensor:
        CountingPGD.calls[self.restarts] = CountingPGD.calls.get(self.restarts, 0) + 1
        return super().perturb(model, x, y, objective)


def reference_pgd() -> PGD:
    return CountingPGD(epsilon=EPSILON, step_size=0.03, steps=3, restarts=3)


def metrics(first: int = 40, batch_size: int = 16) -> dict:
    """Three metrics that need the same reference robust loss, built as a config would (three
    separate but equal attack objects), plus a clean one."""
    examples = {"first": first, "batch_size": batch_size}
    return {
        "clean": CleanPerformance(first=first),
        "pgd": RobustPerformance(attack=reference_pgd(), **examples),
        "flatness_average_robust": AverageCaseFlatness(
            loss="robust",
            weight_attack=RandomWeightAttack(xi=0.3),
            attempts=2,
            attack=CountingPGD(epsilon=EPSILON, step_size=0.03, steps=2, restarts=1),
            reference_attack=reference_pgd(),
            **examples,
        ),  # fmt: skip
        "flatness_worst_robust": WorstCaseFlatness(
            loss="robust",
            weight_attack=JointWeightInputAttack(
                xi=0.01, epsilon=EPSILON, steps=2, weight_lr=0.01, input_lr=0.007
            ),
            attempts=1,
            reference_attack=reference_pgd(),
            **examples,
        ),  # fmt: skip
    }


def evaluate(metrics: dict, model: nn.Module, data: ImageData, seed: int = 0) -> dict:
    return Evaluation(epsilon=EPSILON, step_size=0.03, metrics=metrics, seed=seed)(model, data)


def without_costs(results: dict) -> dict:
    return {key: value for key, value in results.items() if not key.startswith("cost/")}


@pytest.fixture
def model() -> nn.Module:
    return TinyNet().eval()


def test_reference_robust_loss_is_attacked_once_and_shared_by_the_metrics(model, tiny_data):
    CountingPGD.calls = {}
    results = evaluate(metrics(), model, tiny_data)
    assert CountingPGD.calls[3] == 3  # 40 examples, 16 at a time: one pass, not three
    loss = results["test/robust_loss/pgd"]
    assert results["flatness/average/robust/reference"] == loss
    assert results["flatness/worst/robust/reference"] == loss


def test_shared_reference_equals_the_reference_computed_on_its_own(model, tiny_data):
    results = evaluate(metrics(), model, tiny_data, seed=5)
    attack = reference_pgd()
    key = reference_key("test", 40, 16, attack)
    with seeded_stream(5, key):
        alone = robust_losses(model, select(tiny_data, "test", 40), attack, 16)
    assert results["test/robust_loss/pgd"] == alone.mean_loss()
    assert results["test/robust_error/pgd"] == alone.mean_error()
    with seeded_stream(5, key):  # the pre-sharing code: batch means weighted by batch size
        batches = list(select(tiny_data, "test", 40).batches(16))
        adversarial = [attack(model, x, y) for x, y in batches]
    with torch.no_grad():
        total = sum(
            nn.functional.cross_entropy(model(xa), y, reduction="sum")
            for xa, (_, y) in zip(adversarial, batches, strict=True)
        )
    assert results["flatness/average/robust/reference"] == pytest.approx(total.item() / 40, 1e-6)


def test_reference_is_not_shared_when_the_examples_or_the_attack_differ(model, tiny_data):
    CountingPGD.calls = {}
    chosen = metrics()
    chosen["pgd"] = RobustPerformance(attack=reference_pgd(), first=32, batch_size=16)
    chosen["flatness_worst_robust"] = None
    chosen["flatness_average_robust"].reference_attack = CountingPGD(
        epsilon=EPSILON, step_size=0.02, steps=3, restarts=3
    )
    evaluate(chosen, model, tiny_data)
    assert CountingPGD.calls[3] == 2 + 3  # 32 examples (2 batches), then 40 with another step


def test_switching_a_metric_off_leaves_the_others_bitwise_unchanged(model, tiny_data):
    everything = without_costs(evaluate(metrics(), model, tiny_data))
    for name in ["pgd", "flatness_average_robust", "clean"]:
        fewer = metrics()
        fewer[name] = None
        kept = without_costs(evaluate(fewer, model, tiny_data))
        assert kept == {key: everything[key] for key in kept}, name
        assert len(kept) < len(everything)


def test_metrics_draw_different_streams_and_the_run_seed_changes_them(model, tiny_data):
    assert derived_seed(0, "metric/pgd") != derived_seed(0, "metric/flatness")
    assert derived_seed(0, "metric/pgd") != derived_seed(1, "metric/pgd")
    assert derived_seed(0, "metric/pgd") == 2645633556996784070  # stable across processes
    one, other = evaluate(metrics(), model, tiny_data), evaluate(metrics(), model, tiny_data, 1)
    assert one["test/robust_loss/pgd"] != other["test/robust_loss/pgd"]


def test_evaluation_records_the_seconds_of_each_metric_and_the_total(model, tiny_data):
    chosen = metrics()
    chosen["flatness_worst_robust"] = None
    results = evaluate(chosen, model, tiny_data)
    costs = {key: value for key, value in results.items() if key.startswith("cost/")}
    names = ["clean", "pgd", "flatness_average_robust"]
    assert set(costs) == {*(f"cost/{name}" for name in names), "cost/evaluation"}
    assert all(value > 0 for value in costs.values())
    assert costs["cost/evaluation"] == pytest.approx(sum(costs[f"cost/{n}"] for n in names))
