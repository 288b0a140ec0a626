"""Wall-clock cost of AutoAttack, for ``make bench``.

``bench_autoattack(model, n, device)`` attacks n synthetic images labelled with the model's own
predictions (so every example starts robust and every component has work) and reports seconds
per 1000 images:

- ``autoattack/seconds_per_1000``: the standard ensemble as it runs, examples leaving as they
  break (on an untrained model most break in APGD-CE's first steps: a best case);
- ``autoattack/full_budget_seconds_per_1000/<component>`` and their sum
  ``autoattack/full_budget_seconds_per_1000``: each component on examples it cannot break
  (ε = 1e-6), i.e. its whole budget spent on every example: the worst case of a robust model.

On a CPU the budgets can be cut with ``budget`` (steps and queries × budget); the full-budget
numbers are then extrapolated linearly (cost is linear in steps and queries), the ensemble
number is not (it is reported as measured, with the budget).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from advflat.attacks.apgd import APGD, APGDTargeted
from advflat.attacks.autoattack import AutoAttack, AutoAttackResult
from advflat.attacks.base import Attack
from advflat.attacks.fab import FABTargeted
from advflat.attacks.square import Square
from benchmarks.timing import timed

Component = APGD | APGDTargeted | FABTargeted | Square


def standard_components(epsilon: float, budget: float) -> list[Component]:
    """The standard version's components with steps and queries scaled by ``budget``."""
    steps, queries = max(round(100 * budget), 1), max(round(5000 * budget), 2)
    return [
        APGD(epsilon=epsilon, steps=steps, restarts=1),
        APGDTargeted(epsilon=epsilon, steps=steps, n_target_classes=9, restarts=1),
        FABTargeted(epsilon=epsilon, steps=steps, n_target_classes=9, restarts=1),
        Square(epsilon=epsilon, queries=queries, restarts=1, rescale_schedule=False),
    ]


def attack_all(attack: Attack, model: nn.Module, batches: list[tuple[Tensor, Tensor]]) -> None:
    for x, y in batches:
        attack(model, x, y)


def bench_autoattack(
    model: nn.Module,
    n: int,
    device: torch.device | str,
    *,
    epsilon: float = 8 / 255,
    budget: float = 1.0,
    batch_size: int = 500,
) -> dict[str, float]:
    """Seconds per 1000 images of AutoAttack (standard, L∞) on n random images (see module)."""
    device = torch.device(device)
    model = model.to(device).eval()
    shape = tuple(getattr(model, "input_shape", (3, 32, 32)))
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((n, *shape), generator=generator).to(device)
    with torch.no_grad():
        y = torch.cat([model(xb).argmax(1) for xb in x.split(batch_size)])  # all robust at x
    per_1000 = 1000 / n
    components: list[Attack] = list(standard_components(epsilon, budget))
    ensemble = AutoAttack(epsilon=epsilon, version="custom", attacks=components)
    result: dict[str, float] = {"images": float(n), "budget": budget}
    outcome: list[AutoAttackResult] = []
    seconds = timed(lambda: outcome.append(ensemble.run(model, x, y, batch_size)), device)
    result["autoattack/seconds_per_1000"] = seconds * per_1000
    result["autoattack/robust_error"] = outcome[0].robust_error
    total = 0.0
    batches = list(zip(x.split(batch_size), y.split(batch_size), strict=True))
    for attack in standard_components(1e-6, budget):
        seconds = timed(functools.partial(attack_all, attack, model, batches), device)
        full = seconds / budget * per_1000
        result[f"autoattack/full_budget_seconds_per_1000/{attack.name}"] = full
        total += full
    result["autoattack/full_budget_seconds_per_1000"] = total
    return result
