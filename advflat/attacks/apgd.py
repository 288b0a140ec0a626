"""Auto-PGD: APGD-CE, APGD-DLR and APGD-T (Croce & Hein, ICML 2020, "Reliable evaluation of
adversarial robustness with an ensemble of diverse parameter-free attacks").

Threat model: ||x_adv − x|| <= ε (L∞ or L2), x_adv in [0, 1]. PGD without a step-size parameter:
the step size starts at 2ε and is halved at checkpoints where progress stalls (see
``advflat.attacks.apgd_ascent``). An example counts as broken as soon as any iterate is
misclassified; the attack returns that iterate, otherwise the highest-loss one over restarts
(and target classes for APGD-T).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advflat.attacks.apgd_ascent import apgd_ascent, apgd_checkpoints
from advflat.attacks.autoattack_common import (
    WorstCase,
    best_target,
    check_classes,
    require_default_objective,
    target_classes,
    target_passes,
    target_rows,
)
from advflat.attacks.base import Attack, Objective, cross_entropy
from advflat.attacks.dlr import dlr_loss, targeted_dlr_loss
from advflat.attacks.norms import NORMS
from advflat.core import checks

__all__ = ["APGD", "APGDTargeted", "apgd_checkpoints"]

# loss name -> per-example loss (logits (B, K), labels (B,)) -> (B,) that APGD maximises
LOSSES: dict[str, Objective] = {"ce": cross_entropy, "dlr": dlr_loss}


class _APGDBase(Attack):
    def __init__(
        self, *, epsilon: float, norm: str, steps: int, restarts: int, rho: float, momentum: float
    ) -> None:
        self.epsilon = checks.positive("epsilon", epsilon)
        self.norm = checks.one_of("norm", norm, NORMS)
        self.steps = checks.at_least("steps", steps, 1)
        self.restarts = checks.at_least("restarts", restarts, 1)
        self.rho = checks.in_range("rho", rho, 0.0, 1.0)
        self.momentum = checks.in_range("momentum", momentum, 0.0, 1.0, low_open=True)

    def _settings(self) -> dict:
        return {
            "epsilon": self.epsilon,
            "norm": self.norm,
            "steps": self.steps,
            "rho": self.rho,
            "momentum": self.momentum,
        }

    def _runs(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        target: Tensor,
        loss_fn: Objective,
        result: WorstCase,
    ) -> None:
        """``restarts`` runs, each on the rows of ``result`` still unbroken."""
        for _ in range(self.restarts):
            rows = result.remaining()
            if rows.numel() == 0:
                return
            x_adv, loss, broken = apgd_ascent(
                model, x[rows], y[rows], target[rows], loss_fn, **self._settings()
            )
            result.update(rows, x_adv, loss, broken)


class APGD(_APGDBase):
    """Untargeted APGD with the cross-entropy (``loss="ce"``, APGD-CE) or DLR loss (APGD-DLR).

    ``momentum`` is the paper's α: x ← P(x + α(z − x) + (1 − α)(x − x_prev)); ``rho`` the share
    of loss-increasing steps below which a checkpoint halves the step size (both the published
    constants by default). The budget (``epsilon``, ``steps``, ``restarts``) has no defaults:
    AutoAttack's (100 steps, 1 restart) is set in conf/attack/apgd_ce.yaml and by
    ``AutoAttack``'s versions.
    """

    def __init__(
        self,
        *,
        epsilon: float,
        norm: str = "linf",
        steps: int,
        restarts: int,
        loss: str = "ce",
        rho: float = 0.75,
        momentum: float = 0.75,
    ) -> None:
        super().__init__(
            epsilon=epsilon, norm=norm, steps=steps, restarts=restarts, rho=rho, momentum=momentum
        )
        self.loss = checks.one_of("loss", loss, LOSSES)

    @property
    def name(self) -> str:
        return f"apgd-{self.loss}"

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, objective: Objective) -> Tensor:
        require_default_objective(self, objective)
        result = WorstCase(x)
        self._runs(model, x.detach(), y, y, LOSSES[self.loss], result)
        return result.x


class APGDTargeted(_APGDBase):
    """APGD-T: APGD on the targeted DLR loss, once per target class.

    Targets are the ``n_target_classes`` highest clean logits other than the label (the 2nd to
    10th for a correctly classified CIFAR-10 image; ``None``: all other classes). All targets of
    an example run side by side in one pass (at most ``max_rows`` example-target rows at a
    time, None: all) and stop as soon as one of them breaks it; each of the ``restarts`` runs
    attacks the examples still unbroken. An example is broken exactly when some target breaks
    it, as in a run over the targets one after the other, at a fraction of the passes. The
    budget (``epsilon``, ``steps``, ``n_target_classes``, ``restarts``) has no defaults:
    AutoAttack's (100 steps, 9 targets, 1 restart) is set in conf/attack/apgd_t.yaml and by
    ``AutoAttack``'s versions.
    """

    name = "apgd-t"

    def __init__(
        self,
        *,
        epsilon: float,
        norm: str = "linf",
        steps: int,
        n_target_classes: int | None,
        restarts: int,
        rho: float = 0.75,
        momentum: float = 0.75,
        max_rows: int | None = 1000,
    ) -> None:
        super().__init__(
            epsilon=epsilon, norm=norm, steps=steps, restarts=restarts, rho=rho, momentum=momentum
        )
        if n_target_classes is not None:
            checks.at_least("n_target_classes", n_target_classes, 1)
        self.n_target_classes = n_target_classes
        self.max_rows = None if max_rows is None else checks.at_least("max_rows", max_rows, 1)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, objective: Objective) -> Tensor:
        require_default_objective(self, objective)
        x = x.detach()
        with torch.no_grad():
            logits = model(x)  # (B, K): the clean ranking picks the targets
        check_classes("APGD-T", logits, 4)
        targets = target_classes(logits, y, self.n_target_classes)  # (B, T)
        count = targets.shape[1]
        result = WorstCase(x)
        for _ in range(self.restarts):
            for examples in target_passes(result.remaining(), count, self.max_rows):
                rows, target = target_rows(examples, targets)  # (R·T,) each
                pairs = torch.stack([y[rows], target], dim=1)  # (R·T, 2)
                found = apgd_ascent(
                    model, x[rows], y[rows], pairs, targeted_dlr_loss, groups=rows,
                    **self._settings(),
                )  # fmt: skip
                result.update(examples, *best_target(*found, count))
        return result.x
