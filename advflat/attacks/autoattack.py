"""AutoAttack (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks"): the robustness evaluation reviewers trust.

Threat model: ||x_adv − x|| <= ε (L∞ or L2), x_adv in [0, 1]. The components run one after the
other, each only on the examples still robust (correctly classified at x and at every earlier
attack); inside a component, broken examples leave the batch at once. The result is the
per-example worst case: the first adversarial example found, or x for robust examples.

Versions (``VERSIONS``):
- ``standard``: APGD-CE (100 steps), APGD-T (9 targets), FAB-T (9 targets), Square (5000 queries).
- ``paper``: APGD-CE, APGD-T, FAB-T (the evaluation of Stutz et al., ICCV 2021).
- ``plus``: APGD-CE and APGD-DLR (5 restarts each), FAB (5 restarts), Square (5000 queries,
  1 restart: the reference "plus" changes Square's queries only), then APGD-T and FAB-T over
  all other classes.
- ``custom``: the attack objects in ``attacks`` (nested ``_target_`` nodes in a config).

``run`` also returns the cumulative robust accuracy after each component, and with
``state_file`` it saves its progress after every batch so an interrupted evaluation continues
where it stopped. Every component batch is seeded from (seed, component, first example), so a
resumed evaluation ends exactly like an uninterrupted one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advflat.attacks.apgd import APGD, APGDTargeted
from advflat.attacks.autoattack_checks import sanity_checks
from advflat.attacks.autoattack_common import misclassified, require_default_objective
from advflat.attacks.autoattack_resume import check_state
from advflat.attacks.autoattack_state import (
    AutoAttackState,
    fingerprint,
    load_state,
    save_state,
)
from advflat.attacks.base import Attack, Objective, frozen
from advflat.attacks.fab import FAB, FABTargeted
from advflat.attacks.inputs import validates_inputs
from advflat.attacks.norms import NORMS, project
from advflat.attacks.square import Square
from advflat.core import checks
from advflat.core.rng import seeded_rng

log = logging.getLogger(__name__)

SANITY_EXAMPLES = 32  # the sanity checks look at this many examples


class ThreatModel(TypedDict):
    """The keyword arguments every component shares."""

    epsilon: float
    norm: str


def standard(epsilon: float, norm: str) -> list[Attack]:
    common: ThreatModel = {"epsilon": epsilon, "norm": norm}
    return [
        APGD(**common, steps=100, restarts=1, loss="ce"),
        APGDTargeted(**common, steps=100, n_target_classes=9, restarts=1),
        FABTargeted(**common, steps=100, n_target_classes=9, restarts=1),
        # AutoAttack runs Square's schedule unstretched for its 5000-query budget.
        Square(**common, queries=5000, p_init=0.8, restarts=1, rescale_schedule=False),
    ]


def paper(epsilon: float, norm: str) -> list[Attack]:
    """The components Stutz et al. report (their AutoAttack predates Square in the ensemble):
    the standard version without Square."""
    return standard(epsilon, norm)[:3]


def plus(epsilon: float, norm: str) -> list[Attack]:
    common: ThreatModel = {"epsilon": epsilon, "norm": norm}
    return [
        APGD(**common, steps=100, restarts=5, loss="ce"),
        APGD(**common, steps=100, restarts=5, loss="dlr"),
        FAB(**common, steps=100, restarts=5),
        Square(**common, queries=5000, p_init=0.8, restarts=1, rescale_schedule=False),
        APGDTargeted(**common, steps=100, n_target_classes=None, restarts=1),
        FABTargeted(**common, steps=100, n_target_classes=None, restarts=1),
    ]


VERSIONS: dict[str, Callable[[float, str], list[Attack]]] = {
    "standard": standard,
    "paper": paper,
    "plus": plus,
}


@dataclass
class AutoAttackResult:
    """x_adv (N, ...), the final robust mask (N,) and how many examples were robust after the
    clean check (``"clean"``) and after each component, cumulatively, in running order."""

    x_adv: Tensor
    robust: Tensor
    robust_counts: dict[str, int]

    @property
    def accuracy(self) -> dict[str, float]:
        return {name: count / len(self.robust) for name, count in self.robust_counts.items()}

    def errors(self) -> dict[str, float]:
        total = len(self.robust)
        return {name: (total - count) / total for name, count in self.robust_counts.items()}

    @property
    def robust_error(self) -> float:
        return int((~self.robust).sum()) / len(self.robust)


def component_name(attack: object) -> str:
    return getattr(attack, "name", type(attack).__name__.lower())


def batch_seed(keys: tuple[int, ...]) -> int:
    """One torch seed from ``keys`` = (seed, component, first example) of a component batch."""
    return int(np.random.SeedSequence(keys).generate_state(1)[0])


class AutoAttack(Attack):
    """The AutoAttack ensemble; ``attack(model, x, y)`` or ``attack.run(...)`` for the record."""

    def __init__(
        self,
        *,
        epsilon: float,
        norm: str = "linf",
        version: str = "standard",
        attacks: list[Attack] | None = None,
        state_file: str | None = None,
        seed: int = 0,
    ) -> None:
        self.epsilon = checks.positive("epsilon", epsilon)
        self.norm = checks.one_of("norm", norm, NORMS)
        self.version = checks.one_of("version", version, [*VERSIONS, "custom"])
        self.attacks, self.state_file = attacks, state_file
        self.seed = checks.at_least("seed", seed, 0)
        if version == "custom":
            if not attacks:
                raise ValueError("attacks must be a non-empty list with version='custom'")
            components = list(attacks)
        else:
            if attacks is not None:
                raise ValueError(f"attacks must be null unless version='custom', got {attacks!r}")
            components = VERSIONS[version](epsilon, norm)
        self.components = _named(components, epsilon)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.components]

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, objective: Objective) -> Tensor:
        require_default_objective(self, objective)
        return self.run(model, x, y).x_adv

    @validates_inputs("AutoAttack")  # once per call; the components run on checked inputs
    def run(
        self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int | None = None
    ) -> AutoAttackResult:
        """Attack all of (x, y), ``batch_size`` examples at a time (all at once with None)."""
        x = x.detach()
        size = len(x) if batch_size is None else checks.at_least("batch_size", batch_size, 1)
        with frozen(model):
            sanity_checks(model, x[:SANITY_EXAMPLES], y[:SANITY_EXAMPLES])
            stamp = fingerprint(model, x, y, self.epsilon, self.norm, self.names)
            state = self._start(model, x, y, max(size, 1), stamp)
            for index, (name, attack) in enumerate(self.components):
                if name not in state.finished:
                    self._component(model, x, y, index, (name, attack), state, size, stamp)
        return AutoAttackResult(state.x_adv, state.robust, dict(state.robust_counts))

    def _start(
        self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int, stamp: dict
    ) -> AutoAttackState:
        if self.state_file is not None:
            state = load_state(self.state_file, stamp, x.device)
            if state is not None:
                threat = (self.epsilon, self.norm)
                check_state(state, self.state_file, model, (x, y), threat, self.names, batch_size)
                return state
        with torch.no_grad():
            robust = torch.cat(
                [~misclassified(model(xb), yb) for xb, yb in zip(x.split(batch_size),
                                                                y.split(batch_size), strict=True)]
            )  # fmt: skip
        counts = {"clean": int(robust.sum())}
        log.info("AutoAttack (%s, %s, ε=%.4f): clean accuracy %.2f%%",
                 self.version, self.norm, self.epsilon, 100 * counts["clean"] / len(x))  # fmt: skip
        state = AutoAttackState(x_adv=x.clone(), robust=robust, robust_counts=counts)
        self._save(state, stamp)
        return state

    def _component(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        index: int,
        component: tuple[str, Attack],
        state: AutoAttackState,
        batch_size: int,
        stamp: dict,
    ) -> None:
        """One component on the robust examples, batch by batch, saving after each batch."""
        name, attack = component
        if state.component != name or state.pending is None:
            state.component, state.pending = name, state.robust.nonzero().squeeze(1)
        bar = tqdm(total=len(state.pending), desc=f"autoattack {name}", leave=False, disable=None)
        while len(state.pending) > 0:
            chunk = state.pending[:batch_size]
            with seeded_rng(batch_seed((self.seed, index, int(chunk[0]))), x.device):
                x_sub = attack(model, x[chunk], y[chunk])
            # A custom component might overshoot: the ensemble's threat model is enforced here.
            x_sub = project(x[chunk], x_sub, self.epsilon, self.norm)
            with torch.no_grad():
                broken = misclassified(model(x_sub), y[chunk])  # (b,)
            state.x_adv[chunk[broken]] = x_sub[broken]
            state.robust[chunk[broken]] = False
            state.pending = state.pending[len(chunk) :]
            self._save(state, stamp)
            bar.update(len(chunk))
        bar.close()
        state.finished.append(name)
        state.robust_counts[name] = int(state.robust.sum())
        state.component, state.pending = None, None
        self._save(state, stamp)
        accuracy = 100 * state.robust_counts[name] / len(x)
        log.info("AutoAttack after %s: robust accuracy %.2f%%", name, accuracy)

    def _save(self, state: AutoAttackState, stamp: dict) -> None:
        if self.state_file is not None:
            save_state(self.state_file, state, stamp)


def _named(attacks: list[Attack], epsilon: float) -> list[tuple[str, Attack]]:
    """(unique name, attack) per component; a component may not use a larger ε."""
    named: list[tuple[str, Attack]] = []
    for i, attack in enumerate(attacks):
        if not callable(attack):
            raise ValueError(f"attacks[{i}] must be an attack, got {attack!r}")
        own = getattr(attack, "epsilon", None)
        if own is not None and own > epsilon * (1 + 1e-6):
            raise ValueError(f"attacks[{i}].epsilon must be <= epsilon ({epsilon}), got {own}")
        name, taken = component_name(attack), {n for n, _ in named}
        unique, copy = name, 1
        while unique in taken:  # two APGD-CE with different settings: apgd-ce, apgd-ce-2
            copy += 1
            unique = f"{name}-{copy}"
        named.append((unique, attack))
    return named
