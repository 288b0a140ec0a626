"""TRADES (Zhang et al. 2019, "Theoretically principled trade-off between robustness and
accuracy"), SPEC §1.

The attack maximises KL(p(x) || p(x+δ)) where p(x) are the clean probabilities, computed once in
the attack's mode (eval by default) without a graph; the loss is

    CE(f(x), y) + β · mean_i KL(p(x_i) || p(x'_i)),

from ONE train-mode forward over the concatenated clean and adversarial batch (gradients flow
through both sides of the KL, as in the original method). β ∈ {1, 3, 6, 9} in the paper.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advflat import checks
from advflat.training.losses import split_stats
from advflat.training.robust import RobustTraining


def kl_divergence(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """Per-example KL(softmax(p) || softmax(q)) (B,), differentiable in both arguments."""
    log_p = F.log_softmax(p_logits, dim=1)  # (B, K)
    log_q = F.log_softmax(q_logits, dim=1)  # (B, K)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def kl_objective(logits: Tensor, probabilities: Tensor) -> Tensor:
    """The TRADES attack objective KL(p || softmax(logits)) (B,) for fixed probabilities p."""
    return F.kl_div(F.log_softmax(logits, dim=1), probabilities, reduction="none").sum(dim=1)


class TRADES(RobustTraining):
    """TRADES with trade-off ``beta`` (β); stats: CE part ``clean_loss``, KL part ``kl``."""

    def __init__(self, *, beta: float = 6.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.beta = checks.non_negative("beta", beta)

    def inputs(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        with self.attack_mode(model), torch.no_grad():
            probabilities = F.softmax(model(x), dim=1)  # (B, K), the attack's fixed target
        return torch.cat([x, self.attacked(model, x, probabilities, kl_objective)])

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        inputs = self.inputs(model, x, y)  # (2B, C, H, W): clean, then adversarial
        logits = self.train_forward(model, inputs)  # (2B, K): one pass for both halves
        clean, adversarial = logits[: len(x)], logits[len(x) :]
        ce = self.criterion(clean, y)
        kl = kl_divergence(clean, adversarial).mean()
        loss = ce + self.beta * kl
        stats = split_stats("clean", clean, y, ce)
        stats.update(
            split_stats("adversarial", adversarial, y, F.cross_entropy(adversarial.detach(), y))
        )
        stats.update({"kl": kl.detach(), "loss": loss.detach()})
        return loss, stats
