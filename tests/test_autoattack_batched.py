"""APGD-T and FAB-T attack all target classes of an example side by side: they must break
exactly the examples that a straightforward run over the targets one after the other breaks,
in T times fewer model passes."""

# The digits fixtures are shared with test_autoattack.py (imported, then used as arguments).
# ruff: noqa: F811

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import advflat.attacks.apgd_ascent as apgd_ascent_module
from advflat.attacks.apgd import APGDTargeted
from advflat.attacks.apgd_ascent import apgd_ascent
from advflat.attacks.autoattack import AutoAttack
from advflat.attacks.autoattack_common import WorstCase, misclassified, target_classes
from advflat.attacks.dlr import targeted_dlr_loss
from advflat.attacks.fab import FABTargeted
from advflat.attacks.fab_search import fab_search
from advflat.attacks.norms import project
from advflat.attacks.square import Square
from tests.test_autoattack import Counting, all_digits, digits  # noqa: F401 (fixtures)

EPSILON, STEPS, TARGETS = 0.05, 10, 3


def fixed_start(x: Tensor, epsilon: float, norm: str) -> Tensor:
    """A start that depends on x alone, so a batched and a sequential run start alike."""
    return project(x, x + epsilon * torch.sign(torch.sin(1000 * x + 1)), epsilon, norm)


def sequential_apgd_t(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """The textbook APGD-T: one target after the other, each on the examples still unbroken."""
    with torch.no_grad():
        targets = target_classes(model(x), y, TARGETS)
    result = WorstCase(x)
    settings = {"epsilon": EPSILON, "norm": "linf", "steps": STEPS, "rho": 0.75, "momentum": 0.75}
    for rank in range(TARGETS):
        rows = result.remaining()
        pairs = torch.stack([y[rows], targets[rows, rank]], dim=1)
        found = apgd_ascent(model, x[rows], y[rows], pairs, targeted_dlr_loss, **settings)
        result.update(rows, *found)
    return result.x


def sequential_fab_t(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        logits = model(x)
    targets = target_classes(logits, y, TARGETS)
    result = WorstCase(x)
    result.update(torch.arange(len(x)), x, torch.zeros(len(x)), misclassified(logits, y))
    settings = FABTargeted(epsilon=EPSILON, steps=STEPS, n_target_classes=9, restarts=1)._settings()
    for rank in range(TARGETS):
        rows = result.remaining()
        x_adv, broken = fab_search(model, x[rows], y[rows], targets[rows, rank], x[rows], settings)
        result.update(rows, x_adv, torch.zeros(len(rows)), broken)
    return result.x


def broken(model: nn.Module, x_adv: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return misclassified(model(x_adv), y)


@pytest.mark.parametrize("max_rows", [None, 32])  # 32 rows: ten examples' targets per pass
def test_batched_apgd_t_breaks_exactly_the_examples_a_sequential_run_breaks(
    digits, monkeypatch, max_rows
):
    model, x, y = digits
    monkeypatch.setattr(apgd_ascent_module, "apgd_start", fixed_start)
    attack = APGDTargeted(
        epsilon=EPSILON, steps=STEPS, n_target_classes=TARGETS, max_rows=max_rows, restarts=1
    )
    fast, slow = attack(model, x, y), sequential_apgd_t(model, x, y)
    assert torch.equal(broken(model, fast, y), broken(model, slow, y))
    assert 0 < broken(model, fast, y).float().mean() < 1  # some examples resist, some break
    assert (fast - x).abs().amax() <= EPSILON + 1e-6


@pytest.mark.parametrize("max_rows", [None, 32])
def test_batched_fab_t_breaks_exactly_the_examples_a_sequential_run_breaks(digits, max_rows):
    model, x, y = digits
    attack = FABTargeted(
        epsilon=EPSILON, steps=STEPS, n_target_classes=TARGETS, max_rows=max_rows, restarts=1
    )
    fast, slow = attack(model, x, y), sequential_fab_t(model, x, y)
    assert torch.equal(broken(model, fast, y), broken(model, slow, y))
    assert 0 < broken(model, fast, y).float().mean() < 1
    kept = ~broken(model, fast, y)
    assert torch.equal(fast[kept], x[kept])  # FAB returns x where it found nothing within ε


def test_ensemble_robust_error_equals_the_sequential_ensembles(digits, monkeypatch):
    model, x, y = digits
    monkeypatch.setattr(apgd_ascent_module, "apgd_start", fixed_start)

    class Sequential:  # a custom component wrapping the textbook implementation
        def __init__(self, name: str, run) -> None:
            self.name, self.run = name, run

        def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
            return self.run(model, x, y)

    square = Square(epsilon=EPSILON, queries=30, restarts=1)
    fast = [
        APGDTargeted(epsilon=EPSILON, steps=STEPS, n_target_classes=TARGETS, restarts=1),
        FABTargeted(epsilon=EPSILON, steps=STEPS, n_target_classes=TARGETS, restarts=1),
        square,
    ]
    slow = [Sequential("apgd-t", sequential_apgd_t), Sequential("fab-t", sequential_fab_t), square]
    ours = AutoAttack(epsilon=EPSILON, version="custom", attacks=fast).run(model, x, y)
    reference = AutoAttack(epsilon=EPSILON, version="custom", attacks=slow).run(model, x, y)
    assert ours.robust_error == reference.robust_error
    assert ours.errors() == reference.errors()


def test_all_targets_share_each_model_pass(digits):
    model, x, y = digits
    counted = Counting(model)
    # ε this small breaks nothing: every target spends its whole budget on every example.
    APGDTargeted(epsilon=1e-6, steps=STEPS, n_target_classes=TARGETS, restarts=1)(
        counted, x[:20], y[:20]
    )
    assert counted.calls <= 1 + 1 + STEPS  # clean logits, start, one per step: not × TARGETS
    counted = Counting(model)
    FABTargeted(epsilon=1e-6, steps=STEPS, n_target_classes=TARGETS, restarts=1)(
        counted, x[:20], y[:20]
    )
    assert counted.calls <= 1 + 2 * (STEPS + 1)  # clean logits, a landing and a gradient each


class RowCounting(nn.Module):
    """Counts the rows the model sees with an input gradient and without one."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.gradient_rows, self.forward_rows = model, 0, 0

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            self.gradient_rows += len(x)
        else:
            self.forward_rows += len(x)
        return self.model(x)


def test_fab_t_spends_one_gradient_per_row_and_step_even_when_it_steps_back(digits):
    model, x, y = digits
    counted = RowCounting(model)
    # At ε = 1e-6 nothing is broken within ε, yet the steps land beyond the boundary and step
    # back: a step back must not cost a gradient of its own.
    x_adv = FABTargeted(epsilon=1e-6, steps=STEPS, n_target_classes=TARGETS, restarts=1)(
        counted, x[:20], y[:20]
    )
    assert torch.equal(x_adv, x[:20])
    rows = 20 * TARGETS
    assert counted.gradient_rows == rows * STEPS
    assert counted.forward_rows == 20 + rows * (STEPS + 1)  # clean logits, then every landing


def test_max_rows_is_validated():
    with pytest.raises(ValueError, match="max_rows must be >= 1"):
        APGDTargeted(epsilon=0.1, max_rows=0, steps=100, n_target_classes=9, restarts=1)
    with pytest.raises(ValueError, match="max_rows must be >= 1"):
        FABTargeted(epsilon=0.1, max_rows=0, steps=100, n_target_classes=9, restarts=1)
