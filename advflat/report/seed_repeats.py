"""A study repeated over seeds: when a method (family + hyper-parameters) was trained with several
seeds, the correlations are computed once per seed, over the models of that seed, beside the pooled
one over every run of every seed.

A seed is a label (``seed=…`` of the run's overrides, else its config's); numeric labels sort as
numbers, so seed 10 comes after seed 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from advflat.report.correlation import Correlation, correlate, finite_pairs
from advflat.report.families import Model, Setting

if TYPE_CHECKING:  # the scatter plot shows the per-seed fits, so it imports this module
    from advflat.report.scatter import Point


def seed_order(seed: str) -> tuple[int, float, str]:
    """Sort key: numeric seeds first, by value; any other label after, alphabetically."""
    try:
        return 0, float(seed), seed
    except ValueError:
        return 1, 0.0, seed


def several_seeds(models: list[Model]) -> bool:
    """Whether some method was trained with two or more different seeds."""
    seeds: dict[Setting, set[str]] = {}
    for model in models:
        seeds.setdefault(model.setting, set()).add(model.run.seed)
    return any(len(found) > 1 for found in seeds.values())


@dataclass(frozen=True)
class SeedFit:
    """The correlation over the models of one seed (None: fewer than 3, or a constant axis)."""

    seed: str
    n: int  # models of this seed with both values
    fit: Correlation | None

    def as_entry(self) -> dict[str, Any]:
        return {"seed": self.seed, "n": self.n, **(asdict(self.fit) if self.fit else {})}


def per_seed(points: Sequence[Point]) -> list[SeedFit]:
    """One correlation per seed, in seed order, over that seed's points."""
    fits = []
    for seed in sorted({p.seed for p in points}, key=seed_order):
        mine = [p for p in points if p.seed == seed]
        x, y = [p.x for p in mine], [p.y for p in mine]
        fits.append(SeedFit(seed, len(finite_pairs(x, y)[0]), correlate(x, y)))
    return fits
