"""PGD adversarial training (Madry et al. 2018) with the seed article's ``fraction`` split."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from advflat import checks
from advflat.attacks.base import Objective, cross_entropy
from advflat.training.friendly import FriendlyPGD
from advflat.training.losses import split_stats
from advflat.training.robust import RobustTraining


class AdversarialTraining(RobustTraining):
    """Train on a mix of clean and adversarial examples (SPEC §1).

    ``fraction`` f ∈ (0, 1] is the share of ADVERSARIAL examples: the first int((1-f)·B) examples
    of a batch stay clean, the rest are attacked. The attack runs with the model in eval mode
    (running BN statistics; ``attack_in_eval_mode``), then ONE train-mode forward pass sees the
    concatenated batch, so BN statistics mix clean and adversarial inputs. The loss weighs the two
    parts by the realised adversarial share f' (decision: (1-f')·CE_clean + f'·CE_adv, the
    intuitive weighting; the original code swapped the weights for f ∉ {0.5, 1}).

    Variants of the paper (SPEC §1):
    - ``prevent_label_leaking``: attack the model's predicted label instead of the true one
      (Kurakin et al. 2017), so the adversarial example carries no information about y.
    - ``ignore_incorrect``: examples the model misclassifies on the clean input are not attacked
      (they are trained clean, in the adversarial part of the batch).
    - ``friendly_tau``: PGD-K-τ (Zhang et al. 2020): each example stops τ steps after it is
      misclassified (``FriendlyPGD`` with the configured PGD's ε, step size, K, norm and init).
      The per-epoch test curves keep using the configured attack.
    Clean predictions for the first two are taken in the attack's mode, without a graph.
    """

    def __init__(
        self,
        *,
        fraction: float = 1.0,
        prevent_label_leaking: bool = False,
        ignore_incorrect: bool = False,
        friendly_tau: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.fraction = checks.in_range("fraction", fraction, 0.0, 1.0, low_open=True)
        self.prevent_label_leaking = prevent_label_leaking
        self.ignore_incorrect = ignore_incorrect
        if friendly_tau is not None:
            checks.at_least("friendly_tau", friendly_tau, 0)
        self.friendly_tau = friendly_tau
        self.training_attack = (
            self.attack if friendly_tau is None else FriendlyPGD.like(self.attack, friendly_tau)
        )

    def split(self, batch_size: int) -> int:
        """Number of clean examples at the front of a batch."""
        return int((1.0 - self.fraction) * batch_size)

    def attacked(
        self, model: nn.Module, x: Tensor, y: Tensor, objective: Objective = cross_entropy
    ) -> Tensor:
        """Adversarial versions of (x, y), computed in the configured mode and variant."""
        with self.attack_mode(model):
            predicted = None
            if self.prevent_label_leaking or self.ignore_incorrect:
                with torch.no_grad():
                    predicted = model(x).argmax(dim=1)  # (B,)
            target = predicted if self.prevent_label_leaking else y
            x_adv = self.training_attack(model, x, target, objective)
        if self.ignore_incorrect:
            wrong = (predicted != y).view(-1, *[1] * (x.dim() - 1))
            x_adv = torch.where(wrong, x, x_adv)
        return x_adv

    def inputs(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        split = self.split(len(x))
        return torch.cat([x[:split], self.attacked(model, x[split:], y[split:])])

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self.loss_on(model, self.inputs(model, x, y), y)

    def loss_on(
        self, model: nn.Module, inputs: Tensor, y: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The AT loss on already attacked ``inputs`` (clean part first): one train forward."""
        split = self.split(len(inputs))
        logits = self.train_forward(model, inputs)  # (B, K): one pass, BN sees both parts
        return self.weighted_loss(logits, y, split)

    def weighted_loss(
        self, logits: Tensor, y: Tensor, split: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """(1-f')·CE_clean + f'·CE_adv on logits whose first ``split`` rows are clean."""
        adversarial = self.criterion(logits[split:], y[split:])
        stats = split_stats("adversarial", logits[split:], y[split:], adversarial)
        if split == 0:
            return adversarial, stats
        clean = self.criterion(logits[:split], y[:split])
        share = (len(y) - split) / len(y)  # f', the realised adversarial share
        stats.update(split_stats("clean", logits[:split], y[:split], clean))
        return (1.0 - share) * clean + share * adversarial, stats
