"""MART (Wang et al. 2020, "Improving adversarial robustness requires revisiting misclassified
examples"):

    CE(f(x'), y) − log(1 − max_{k≠y} p_k(x')) + β · mean_i KL(p(x_i) || p(x'_i)) · (1 − p_y(x_i))

The first two terms are MART's "boosted" cross-entropy (BCE) on the adversarial example: CE plus a
margin term that pushes down the most likely wrong class. x' comes from the configured attack on
the CE loss (attack mode: eval by default); the clean and adversarial logits come from ONE
train-mode forward. As in the original method, gradients flow through both sides of the KL and
through the weight 1 − p_y(x). The margin term is computed exactly in log space,
log(1 − p_k*) = logsumexp_{j≠k*} z_j − logsumexp_j z_j, instead of adding small constants.
β ∈ {1, 3, 6, 9} in the paper.

Under label noise the attack targets the true label; every loss term (CE, margin, the weight
1 − p_y(x)) and the statistics take the noisy one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advflat.core import checks
from advflat.training.context import TrainingContext
from advflat.training.labels import training_labels, true_labels
from advflat.training.losses.attacked import AttackedLoss
from advflat.training.losses.base import Stats, split_stats
from advflat.training.losses.trades import kl_divergence


def margin_term(logits: Tensor, y: Tensor) -> Tensor:
    """−log(1 − max_{k≠y} p_k) per example (B,), from logits (B, K)."""
    others = logits.scatter(1, y[:, None], float("-inf"))  # (B, K) the true class masked out
    k_star = others.argmax(dim=1, keepdim=True)  # (B, 1) the most likely wrong class
    without = logits.scatter(1, k_star, float("-inf"))
    return torch.logsumexp(logits, dim=1) - torch.logsumexp(without, dim=1)


def weighted_kl(clean_logits: Tensor, adversarial_logits: Tensor, y: Tensor) -> Tensor:
    """KL(p(x) || p(x')) · (1 − p_y(x)) per example (B,)."""
    p_true = F.softmax(clean_logits, dim=1).gather(1, y[:, None]).squeeze(1)  # (B,)
    return kl_divergence(clean_logits, adversarial_logits) * (1.0 - p_true)


class MARTLoss(AttackedLoss):
    """MART with ``beta`` (β); stats: ``robust_loss`` (CE), ``margin``, ``weighted_kl``."""

    def __init__(self, *, beta: float) -> None:
        self.beta = checks.non_negative("beta", beta)

    def inputs(self, ctx: TrainingContext, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return torch.cat([x, self.attacked(ctx, model, x, true_labels(y))])

    def on(self, ctx: TrainingContext, outputs: Tensor, y: Tensor) -> tuple[Tensor, Stats]:
        y = training_labels(y)
        # (2B, K): clean, then adversarial, one pass for both halves
        clean, adversarial = outputs[: len(y)], outputs[len(y) :]
        ce = ctx.criterion(adversarial, y)
        margin = margin_term(adversarial, y).mean()
        kl = weighted_kl(clean, adversarial, y).mean()
        loss = ce + margin + self.beta * kl
        stats = split_stats("robust", adversarial, y, ce)
        stats.update(split_stats("clean", clean, y, F.cross_entropy(clean.detach(), y)))
        stats.update({"margin": margin.detach(), "weighted_kl": kl.detach(), "loss": loss.detach()})
        return loss, stats
