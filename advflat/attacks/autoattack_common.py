"""Pieces shared by the AutoAttack components (APGD, APGD-T, FAB, FAB-T, Square).

Every component counts an example as broken as soon as one of its iterates is misclassified
(the AutoAttack protocol) and keeps, per example, the best result over restarts and target
classes: a misclassified point once one is found, otherwise the highest loss seen.
"""

from __future__ import annotations

import torch
from torch import Tensor

from advflat.attacks.base import Objective, cross_entropy


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


def target_rows(examples: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Every example once per target class, example-major: (example (R·T,), target (R·T,)).

    The targeted components attack all T targets of an example in one pass (T times the rows
    of a sequential run, and T times fewer passes: the device sees full batches)."""
    count = targets.shape[1]
    return examples.repeat_interleave(count), targets[examples].reshape(-1)


def target_passes(examples: Tensor, count: int, max_rows: int | None) -> list[Tensor]:
    """``examples`` in chunks whose ``count`` target rows each fit in ``max_rows`` (None: one
    chunk; at least one example per chunk); no chunk when there is no example."""
    if examples.numel() == 0:
        return []
    per_pass = len(examples) if max_rows is None else max(max_rows // count, 1)
    return list(examples.split(per_pass))


def best_target(
    x: Tensor, loss: Tensor, broken: Tensor, count: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Reduce (R·T) example-major rows to (R): the first target that broke an example, else its
    highest-loss target (a sequential run over the targets keeps the same)."""
    broken_rt, loss_rt = broken.view(-1, count), loss.view(-1, count)
    # argmax returns the first maximum: the lowest-ranked breaking target.
    pick = torch.where(broken_rt, torch.inf, loss_rt).argmax(dim=1)
    rows = torch.arange(len(pick), device=x.device) * count + pick
    return x[rows], loss[rows], broken_rt.any(dim=1)


def siblings(groups: Tensor, hit: Tensor) -> Tensor:
    """Rows (bool) whose example (``groups``: example id per row) has a row in ``hit``: once one
    target breaks an example, its other targets stop (early exit of broken examples)."""
    return torch.isin(groups, groups[hit])


class WorstCase:
    """Per example, the strongest result over several runs (restarts, target classes).

    A run on the rows still unbroken reports its points, their losses (higher = stronger) and
    which rows it broke; a broken row is final, otherwise the higher loss wins.
    """

    def __init__(self, x: Tensor) -> None:
        self.x = x.detach().clone()
        self.loss = x.new_full((x.shape[0],), float("-inf"))  # (B,)
        self.broken = x.new_zeros(x.shape[0], dtype=torch.bool)  # (B,)

    def remaining(self) -> Tensor:
        """Indices (R,) of the rows not broken yet."""
        return (~self.broken).nonzero().squeeze(1)

    def update(self, rows: Tensor, x: Tensor, loss: Tensor, broken: Tensor) -> None:
        better = broken | (loss > self.loss[rows])
        chosen = rows[better]
        self.x[chosen] = x[better]
        self.loss[chosen] = loss[better]
        self.broken[rows[broken]] = True
