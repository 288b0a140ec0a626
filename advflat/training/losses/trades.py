"""TRADES (Zhang et al. 2019, "Theoretically principled trade-off between robustness and
accuracy").

The attack maximises KL(p(x) || p(x+δ)) where p(x) are the clean probabilities, computed once in
the attack's mode (eval by default) without a graph; the loss is

    CE(f(x), y) + β · mean_i KL(p(x_i) || p(x'_i)),

from ONE train-mode forward over the concatenated clean and adversarial batch (gradients flow
through both sides of the KL, as in the original method). β ∈ {1, 3, 6, 9} in the paper.

Under label noise the CE term (and the statistics) take the noisy label; the attack needs none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advflat.core import checks
from advflat.training.context import TrainingContext
from advflat.training.labels import training_labels
from advflat.training.losses.attacked import AttackedLoss
from advflat.training.losses.base import Stats, split_stats


def kl_divergence(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """Per-example KL(softmax(p) || softmax(q)) (B,), differentiable in both arguments."""
    log_p = F.log_softmax(p_logits, dim=1)  # (B, K)
    log_q = F.log_softmax(q_logits, dim=1)  # (B, K)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def kl_objective(logits: Tensor, probabilities: Tensor) -> Tensor:
    """The TRADES attack objective KL(p || softmax(logits)) (B,) for fixed probabilities p."""
    return F.kl_div(F.log_softmax(logits, dim=1), probabilities, reduction="none").sum(dim=1)


class TRADESLoss(AttackedLoss):
    """TRADES with trade-off ``beta`` (β); stats: CE part ``clean_loss``, KL part ``kl``."""

    def __init__(self, *, beta: float) -> None:
        self.beta = checks.non_negative("beta", beta)

    def inputs(self, ctx: TrainingContext, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        with ctx.attack_mode(model), torch.no_grad():
            probabilities = F.softmax(model(x), dim=1)  # (B, K), the attack's fixed target
        return torch.cat([x, self.attacked(ctx, model, x, probabilities, kl_objective)])

    def on(self, ctx: TrainingContext, outputs: Tensor, y: Tensor) -> tuple[Tensor, Stats]:
        y = training_labels(y)
        # (2B, K): clean, then adversarial, one pass for both halves
        clean, adversarial = outputs[: len(y)], outputs[len(y) :]
        ce = ctx.criterion(clean, y)
        kl = kl_divergence(clean, adversarial).mean()
        loss = ce + self.beta * kl
        stats = split_stats("clean", clean, y, ce)
        stats.update(
            split_stats("robust", adversarial, y, F.cross_entropy(adversarial.detach(), y))
        )
        stats.update({"kl": kl.detach(), "loss": loss.detach()})
        return loss, stats
