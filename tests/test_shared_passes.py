"""The passes several metrics share (the PGD reference robust loss, the clean reference loss)
are computed once per model: the results equal those of computing them once per metric
(``share_passes=False``) bit for bit, with fewer forward passes."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from advflat.attacks.pgd import PGD
from advflat.data.base import ImageData
from advflat.evaluation import (
    AverageCaseFlatness,
    CleanPerformance,
    Evaluation,
    RobustPerformance,
    WorstCaseFlatness,
)
from advflat.weights import AdversarialWeightAttack, JointWeightInputAttack, RandomWeightAttack
from tests.conftest import TinyNet

EPSILON, STEP = 0.1, 0.03
FIRST, BATCH = 40, 16  # 3 batches
STEPS, RESTARTS = 2, 2  # the reference PGD


class CountingForwards(nn.Module):
    """The wrapped model, counting its forward passes."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.forwards = 0

    def forward(self, x: Tensor) -> Tensor:
        self.forwards += 1
        return self.module(x)


def reference_pgd() -> PGD:
    return PGD(epsilon=EPSILON, step_size=STEP, steps=STEPS, restarts=RESTARTS)


def metrics() -> dict:
    """Every metric that reads a shared reference, each built with its own equal objects (as a
    config builds them)."""
    examples: dict[str, Any] = {"first": FIRST, "batch_size": BATCH}
    joint: dict[str, Any] = {
        "xi": 0.01,
        "epsilon": EPSILON,
        "steps": 1,
        "weight_lr": 0.01,
        "input_lr": STEP,
    }
    return {
        "clean": CleanPerformance(**examples),
        "pgd": RobustPerformance(attack=reference_pgd(), **examples),
        "flatness_average_clean": AverageCaseFlatness(
            weight_attack=RandomWeightAttack(xi=0.3), attempts=1, **examples
        ),
        "flatness_worst_clean": WorstCaseFlatness(
            weight_attack=AdversarialWeightAttack(xi=0.01, steps=1, lr=0.01),
            attempts=1,
            **examples,
        ),
        "flatness_average_robust": AverageCaseFlatness(
            loss="robust",
            weight_attack=RandomWeightAttack(xi=0.3),
            attempts=1,
            attack=PGD(epsilon=EPSILON, step_size=STEP, steps=1, restarts=1),
            reference_attack=reference_pgd(),
            **examples,
        ),
        "flatness_worst_robust": WorstCaseFlatness(
            loss="robust",
            weight_attack=JointWeightInputAttack(**joint),
            attempts=1,
            reference_attack=reference_pgd(),
            **examples,
        ),
    }


def evaluate(share_passes: bool, data: ImageData) -> tuple[dict, int]:
    """(results without cost/*, forward passes) of one evaluation of the same tiny model."""
    torch.manual_seed(0)
    model = CountingForwards(TinyNet()).eval()
    evaluation = Evaluation(
        epsilon=EPSILON, step_size=STEP, metrics=metrics(), seed=3, share_passes=share_passes
    )
    results = evaluation(model, data)
    return {k: v for k, v in results.items() if not k.startswith("cost/")}, model.forwards


def test_shared_passes_give_the_same_bits_with_fewer_forward_passes(tiny_data):
    shared, shared_forwards = evaluate(True, tiny_data)
    separate, separate_forwards = evaluate(False, tiny_data)
    assert shared == separate  # every key, every bit
    assert shared["flatness/average/robust/reference"] == shared["test/robust_loss/pgd"]
    assert shared["flatness/worst/robust/reference"] == shared["test/robust_loss/pgd"]
    assert shared["flatness/worst/clean/reference"] == shared["flatness/average/clean/reference"]
    batches = -(-FIRST // BATCH)
    reference_pgd_forwards = batches * (RESTARTS * (STEPS + 1) + 1)  # + the logits' forward
    saved = 2 * reference_pgd_forwards + batches  # 2 more robust references, 1 more clean one
    assert separate_forwards - shared_forwards == saved


def test_share_passes_must_be_a_switch():
    not_a_switch: Any = "no"  # as a config could give it
    with pytest.raises(ValueError, match="share_passes must be true or false, got 'no'"):
        Evaluation(epsilon=EPSILON, step_size=STEP, metrics=metrics(), share_passes=not_a_switch)
