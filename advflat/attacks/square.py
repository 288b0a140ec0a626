"""Square Attack (Andriushchenko, Croce, Flammarion, Hein, ECCV 2020): a score-based black-box
random search, the gradient-free member of AutoAttack.

Threat model: ||x_adv − x|| <= ε (L∞ or L2), x_adv in [0, 1]. Only the model's outputs are used,
so gradient masking cannot hide a vulnerability from it. It minimises the margin
z_y − max_{k≠y} z_k by proposing changes inside random squares and keeping those that lower it.

- L∞: start with vertical stripes (each column ±ε per channel); a proposal sets a random square
  of side h to ±ε per channel. h = round(sqrt(p·H·W)) with p = ``p_init`` halved after
  iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 (of 10 000; stretched to the
  budget with ``rescale_schedule``).
- L2: start from a grid of "bumps" (nested squares weighted 1/(k+1)²) with random signs, norm
  ε; a proposal moves the perturbation of one random square, plus any unused budget, into a new
  bump in another square, keeping ||δ||₂ = ε. This is a simplified form of the published L2
  update (same windows, same bump shape and mass transfer; one sign per channel and square).

Budget: ``queries`` model calls per example and restart, the clean check included in the first
restart; examples stop being queried once misclassified. Restarts run on the unbroken rows.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advflat.attacks.autoattack_common import WorstCase, misclassified, require_default_objective
from advflat.attacks.base import Attack, Objective
from advflat.attacks.norms import NORMS
from advflat.attacks.square_search import margin, square_search
from advflat.core import checks

__all__ = ["Square"]


class Square(Attack):
    """Square Attack with ``queries`` model calls per example and restart.

    The budget (``epsilon``, ``queries``, ``restarts``) has no defaults: AutoAttack's (5000
    queries, 1 restart) is set in conf/attack/square.yaml and by ``AutoAttack``'s versions;
    ``p_init`` defaults to the published 0.8.
    """

    name = "square"

    def __init__(
        self,
        *,
        epsilon: float,
        norm: str = "linf",
        queries: int,
        p_init: float = 0.8,
        restarts: int,
        rescale_schedule: bool = True,
    ) -> None:
        self.epsilon = checks.positive("epsilon", epsilon)
        self.norm = checks.one_of("norm", norm, NORMS)
        self.queries = checks.at_least("queries", queries, 2)  # the clean check + one proposal
        self.p_init = checks.in_range("p_init", p_init, 0.0, 1.0, low_open=True)
        self.restarts = checks.at_least("restarts", restarts, 1)
        self.rescale_schedule = rescale_schedule

    @torch.no_grad()
    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, objective: Objective) -> Tensor:
        require_default_objective(self, objective)
        x = x.detach()
        logits = model(x)  # (B, K): query 1 of the first restart
        result = WorstCase(x)
        everyone = torch.arange(len(x), device=x.device)
        result.update(everyone, x, -margin(logits, y), misclassified(logits, y))
        for restart in range(self.restarts):
            rows = result.remaining()
            if rows.numel() == 0:
                break
            x_adv, rest_margin, broken = square_search(
                model, x[rows], y[rows],
                epsilon=self.epsilon, norm=self.norm, p_init=self.p_init,
                queries=self.queries - (1 if restart == 0 else 0),
                rescale=self.rescale_schedule,
            )  # fmt: skip
            result.update(rows, x_adv, -rest_margin, broken)
        return result.x
