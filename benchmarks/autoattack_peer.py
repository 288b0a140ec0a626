"""advflat's AutoAttack against a budget-matched torchattacks ensemble, on the same points.

torchattacks' own ``AutoAttack(version="standard")`` runs APGD, APGD-T and FAB-T for 10 steps
(its defaults), a tenth of the published budget; the peer here is the published budget in
torchattacks' components: APGD-CE (100 steps), APGD-T (100 steps × 9 targets), FAB-T (100
steps × 9 targets) and Square (5000 queries, p_init 0.8, schedule not rescaled), each on the
points still robust (correct at x and at every earlier component), as advflat runs them.

Both run through a ``PassCounter`` in the same process, so besides seconds (distorted by
whatever else runs on the machine: compare the ratio) they report forward and backward passes
(calls and rows) per component, and the robust error, which must agree.
torchattacks is a benchmark-only extra; nothing in ``advflat`` imports it.
"""

from __future__ import annotations

import time
from typing import Any, cast

import torch
from torch import Tensor, nn

from advflat.attacks.autoattack import AutoAttack
from advflat.attacks.autoattack_common import misclassified
from advflat.attacks.base import Attack
from benchmarks.passes import PassCounter


class Measured:
    """An AutoAttack component that records its seconds and the passes it spent."""

    def __init__(self, attack: Any, counter: PassCounter, record: dict[str, Any]) -> None:
        self.attack, self.counter, self.record = attack, counter, record
        self.epsilon = getattr(attack, "epsilon", None)

    def __call__(self, *inputs: Any) -> Tensor:
        """The attack on ``inputs`` ((model, x, y) for advflat's, (x, y) for torchattacks')."""
        before = self.counter.counts()
        start, start_cpu = time.perf_counter(), time.process_time()
        x_adv = self.attack(*inputs)
        self.record["seconds"] = self.record.get("seconds", 0.0) + time.perf_counter() - start
        cpu = time.process_time() - start_cpu
        self.record["cpu_seconds"] = self.record.get("cpu_seconds", 0.0) + cpu
        for key, value in self.counter.counts().items():
            self.record[key] = self.record.get(key, 0) + value - before[key]
        return x_adv


def run_ours(model: nn.Module, x: Tensor, y: Tensor, epsilon: float, seed: int) -> dict:
    """advflat's standard AutoAttack (one batch), with seconds and passes per component."""
    counter = PassCounter(model)
    attack = AutoAttack(epsilon=epsilon, version="standard", seed=seed)
    components: dict[str, dict[str, Any]] = {name: {} for name in attack.names}
    measured = [
        (name, Measured(component, counter, components[name]))
        for name, component in attack.components
    ]
    attack.components = cast(list[tuple[str, Attack]], measured)  # same call signature
    start, start_cpu = time.perf_counter(), time.process_time()
    result = attack.run(counter, x, y, batch_size=len(x))
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    for name in attack.names:
        components[name]["robust"] = result.robust_counts[name]
    return _summary((seconds, cpu), result.robust_error, counter, components)


def peer_components(model: nn.Module, epsilon: float, seed: int) -> list[tuple[str, Any]]:
    """torchattacks' standard components at the published budget (see the module)."""
    import torchattacks

    common = {"eps": epsilon, "norm": "Linf", "seed": seed}
    return [
        ("apgd-ce", torchattacks.APGD(model, **common, steps=100, n_restarts=1, loss="ce")),
        ("apgd-t", torchattacks.APGDT(model, **common, steps=100, n_restarts=1, n_classes=10)),
        (
            "fab-t",
            torchattacks.FAB(
                model, **common, steps=100, n_restarts=1, multi_targeted=True, n_classes=10
            ),
        ),
        (
            "square",
            torchattacks.Square(
                model, **common, n_queries=5000, n_restarts=1, p_init=0.8, resc_schedule=False
            ),
        ),
    ]


def run_peer(model: nn.Module, x: Tensor, y: Tensor, epsilon: float, seed: int) -> dict:
    """The budget-matched torchattacks ensemble, each component on the points still robust."""
    counter = PassCounter(model)
    components: dict[str, dict[str, Any]] = {}
    start, start_cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        robust = ~misclassified(counter(x), y)
    for name, attack in peer_components(counter, epsilon, seed):
        components[name] = {}
        rows = robust.nonzero().squeeze(1)
        if rows.numel() > 0:
            measured = Measured(attack, counter, components[name])
            x_adv = measured(x[rows], y[rows])
            with torch.no_grad():
                robust[rows[misclassified(counter(x_adv), y[rows])]] = False
        components[name]["robust"] = int(robust.sum())
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return _summary((seconds, cpu), 1 - float(robust.float().mean()), counter, components)


def _summary(
    times: tuple[float, float], error: float, counter: PassCounter, components: dict
) -> dict:
    """Wall and process CPU seconds (the latter less distorted by other work on the machine),
    robust error, passes, and the per-component records."""
    seconds, cpu = times
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "robust_error": error,
        **counter.counts(),
        "components": components,
    }


def compare(model: nn.Module, x: Tensor, y: Tensor, epsilon: float, seed: int = 0) -> dict:
    """Ours, then the peer, back to back; ``speedup`` = peer seconds / our seconds (wall and
    process CPU time)."""
    ours = run_ours(model, x, y, epsilon, seed)
    peer = run_peer(model, x, y, epsilon, seed)
    return {
        "epsilon": epsilon,
        "examples": len(x),
        "ours": ours,
        "torchattacks": peer,
        "speedup": peer["seconds"] / ours["seconds"],
        "cpu_speedup": peer["cpu_seconds"] / ours["cpu_seconds"],
    }
