"""Pieces shared by the AutoAttack components (APGD, APGD-T, FAB, FAB-T, Square).

Every component counts an example as broken as soon as one of its iterates is misclassified
(the AutoAttack protocol) and keeps, per example, the best result over restarts and target
classes: a misclassified point once one is found, otherwise the highest loss seen.
"""

from __future__ import annotations

from torch import Tensor

from advflat.attacks.base import Objective, cross_entropy


def per_example(values: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, ...) so per-example values broadcast against ``like``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def misclassified(logits: Tensor, y: Tensor) -> Tensor:  # (B,) bool
    return logits.argmax(dim=1) != y


def require_default_objective(attack: object, objective: Objective) -> None:
    """AutoAttack components bring their own losses; silently ignoring a caller's objective
    (TRADES' KL, ...) would attack something else than the caller asked for."""
    if objective is not cross_entropy:
        raise ValueError(
            f"{type(attack).__name__} uses its own loss; a custom objective is not supported"
        )


def check_classes(name: str, logits: Tensor, minimum: int) -> None:
    if logits.shape[1] < minimum:
        raise ValueError(f"{name} needs at least {minimum} classes, got {logits.shape[1]}")


def target_classes(logits: Tensor, y: Tensor, count: int | None) -> Tensor:
    """The ``count`` highest-scoring classes other than y, best first: (B, count).

    For a correctly classified example these are the 2nd, 3rd, ... highest logits of the clean
    prediction (APGD-T and FAB-T's targets); ``None`` means all K − 1 other classes.
    """
    others = logits.shape[1] - 1
    count = others if count is None else min(count, others)
    scores = logits.detach().clone()
    scores.scatter_(1, y[:, None], float("-inf"))  # y is never its own target
    return scores.argsort(dim=1, descending=True)[:, :count]


class WorstCase:
    """Per example, the strongest result over several runs (restarts, target classes).

    A run on the rows still unbroken reports its points, their losses (higher = stronger) and
    which rows it broke; a broken row is final, otherwise the higher loss wins.
    """

    def __init__(self, x: Tensor) -> None:
        self.x = x.detach().clone()
        self.loss = x.new_full((x.shape[0],), float("-inf"))  # (B,)
        self.broken = x.new_zeros(x.shape[0], dtype=bool)  # (B,)

    def remaining(self) -> Tensor:
        """Indices (R,) of the rows not broken yet."""
        return (~self.broken).nonzero().squeeze(1)

    def update(self, rows: Tensor, x: Tensor, loss: Tensor, broken: Tensor) -> None:
        better = broken | (loss > self.loss[rows])
        chosen = rows[better]
        self.x[chosen] = x[better]
        self.loss[chosen] = loss[better]
        self.broken[rows[broken]] = True
