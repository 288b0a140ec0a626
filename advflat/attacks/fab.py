"""FAB and FAB-T: the fast adaptive boundary attack (Croce & Hein, ICML 2020, "Minimally
distorted adversarial examples with a fast adaptive boundary attack"), as used by AutoAttack.

FAB looks for the adversarial example of least L∞/L2 norm. At xᵢ it linearises the decision
boundary between the label y and a class s, h(z) = z_s(z) − z_y(z) ≈ h(xᵢ) + ∇h·(z − xᵢ) = 0,
and projects both xᵢ and the original x onto that hyperplane ∩ box (δᵢ and δ_orig). The next
iterate mixes the two, extrapolating by η and biased towards the original point:

    α      = min(||δᵢ|| / (||δᵢ|| + ||δ_orig||), α_max)
    xᵢ₊₁   = clip((1 − α)(xᵢ + η δᵢ) + α(x + η δ_orig))

Whenever an iterate is misclassified the search steps back towards x: xᵢ ← (1 − β)x + β xᵢ
(the minimum-norm attack also remembers the closest adversarial so far; here one within ε ends
the search). FAB-T fixes s to a target class (the ``n`` highest
clean logits other than y, one after the other); untargeted FAB takes, at every step, the class
whose linearised boundary is closest (|h_s| / ||∇h_s||_q, q the dual norm).

As an ε-attack (AutoAttack), an example counts as broken only when an adversarial example within
ε was found; it is then finished at once. Otherwise the clean x is returned (not broken).
Restarts after the first start from a random point in the ball of radius ε/2 (the paper's
min(ε, best norm found)/2, where every adversarial kept is within ε).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advflat.attacks.autoattack_common import (
    WorstCase,
    best_target,
    misclassified,
    require_default_objective,
    target_classes,
    target_passes,
    target_rows,
)
from advflat.attacks.base import Attack, Objective
from advflat.attacks.fab_search import FABSettings, fab_search
from advflat.attacks.norms import NORMS
from advflat.core import checks

__all__ = ["FAB", "FABTargeted"]


class _FABBase(Attack):
    def __init__(
        self,
        *,
        epsilon: float,
        norm: str,
        steps: int,
        restarts: int,
        alpha_max: float,
        eta: float,
        beta: float,
    ) -> None:
        self.epsilon = checks.positive("epsilon", epsilon)
        self.norm = checks.one_of("norm", norm, NORMS)
        self.steps = checks.at_least("steps", steps, 1)
        self.restarts = checks.at_least("restarts", restarts, 1)
        self.alpha_max = checks.in_range("alpha_max", alpha_max, 0.0, 1.0)
        self.eta = checks.at_least("eta", eta, 1.0)
        self.beta = checks.in_range("beta", beta, 0.0, 1.0, low_open=True)

    def _settings(self) -> FABSettings:
        return FABSettings(
            epsilon=self.epsilon,
            norm=self.norm,
            steps=self.steps,
            alpha_max=self.alpha_max,
            eta=self.eta,
            beta=self.beta,
        )

    def _start(self, x: Tensor, restart: int) -> Tensor:
        """The first search starts at x itself, later ones at random within ε/2."""
        return x if restart == 0 else self._random_start(x)

    def _random_start(self, x: Tensor) -> Tensor:
        return NORMS[self.norm].random_start(x, self.epsilon / 2, "uniform")


class FAB(_FABBase):
    """Untargeted FAB: every step heads for the closest linearised boundary.

    The budget (``epsilon``, ``steps``, ``restarts``) has no defaults (AutoAttack's plus
    version: 100 steps, 5 restarts); ``alpha_max``, ``eta``, ``beta`` default to the published
    constants.
    """

    name = "fab"

    def __init__(
        self,
        *,
        epsilon: float,
        norm: str = "linf",
        steps: int,
        restarts: int,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
    ) -> None:
        super().__init__(
            epsilon=epsilon, norm=norm, steps=steps, restarts=restarts,
            alpha_max=alpha_max, eta=eta, beta=beta,
        )  # fmt: skip

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, objective: Objective) -> Tensor:
        require_default_objective(self, objective)
        x = x.detach()
        with torch.no_grad():
            logits = model(x)  # (B, K)
        result = _clean_result(x, y, logits)
        for restart in range(self.restarts):
            rows = result.remaining()
            if rows.numel() == 0:
                break
            start = self._start(x[rows], restart)
            x_adv, broken = fab_search(model, x[rows], y[rows], None, start, self._settings())
            result.update(rows, x_adv, torch.zeros_like(rows, dtype=x.dtype), broken)
        return result.x


class FABTargeted(_FABBase):
    """FAB-T: one search per target class (the ``n_target_classes`` highest clean logits other
    than y; ``None``: all other classes), each with ``restarts`` starts. All targets of an
    example search side by side in one pass (at most ``max_rows`` example-target rows at a
    time, None: all) and stop once one succeeds, as APGD-T's do. The budget (``epsilon``,
    ``steps``, ``n_target_classes``, ``restarts``) has no defaults: AutoAttack's (100 steps, 9
    targets, 1 restart) is set in conf/attack/fab_t.yaml and by ``AutoAttack``'s versions;
    ``alpha_max``, ``eta``, ``beta`` default to the published constants."""

    name = "fab-t"

    def __init__(
        self,
        *,
        epsilon: float,
        norm: str = "linf",
        steps: int,
        n_target_classes: int | None,
        restarts: int,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        max_rows: int | None = 1000,
    ) -> None:
        super().__init__(
            epsilon=epsilon, norm=norm, steps=steps, restarts=restarts,
            alpha_max=alpha_max, eta=eta, beta=beta,
        )  # fmt: skip
        if n_target_classes is not None:
            checks.at_least("n_target_classes", n_target_classes, 1)
        self.n_target_classes = n_target_classes
        self.max_rows = None if max_rows is None else checks.at_least("max_rows", max_rows, 1)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, objective: Objective) -> Tensor:
        require_default_objective(self, objective)
        x = x.detach()
        with torch.no_grad():
            logits = model(x)  # (B, K): the clean ranking picks the targets
        result = _clean_result(x, y, logits)
        targets = target_classes(logits, y, self.n_target_classes)  # (B, T)
        count = targets.shape[1]
        for restart in range(self.restarts):
            for examples in target_passes(result.remaining(), count, self.max_rows):
                rows, target = target_rows(examples, targets)  # (R·T,) each
                start = self._start(x[rows], restart)
                x_adv, broken = fab_search(
                    model, x[rows], y[rows], target, start, self._settings(), groups=rows
                )
                no_loss = torch.zeros(len(rows), dtype=x.dtype, device=x.device)
                result.update(examples, *best_target(x_adv, no_loss, broken, count))
        return result.x


def _clean_result(x: Tensor, y: Tensor, logits: Tensor) -> WorstCase:
    """Start from x; already misclassified examples are broken without a search."""
    result = WorstCase(x)
    rows = torch.arange(len(x), device=x.device)
    result.update(rows, x, x.new_zeros(len(x)), misclassified(logits, y))
    return result
