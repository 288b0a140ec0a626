"""PGD adversarial training (Madry et al. 2018) with a ``fraction`` of adversarial examples per
batch (docs/training.md#adversarial-training)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advflat.attacks.base import Attack
from advflat.attacks.friendly_pgd import FriendlyPGD
from advflat.core import checks
from advflat.training.context import TrainingContext
from advflat.training.labels import training_labels, true_labels
from advflat.training.losses.attacked import AttackedLoss
from advflat.training.losses.base import Stats, split_stats


class AdversarialLoss(AttackedLoss):
    """Train on a mix of clean and adversarial examples.

    ``fraction`` f ∈ (0, 1] is the share of ADVERSARIAL examples: the first int((1-f)·B) examples
    of a batch stay clean, the rest are attacked. The attack runs in the attack's mode (eval by
    default), then ONE train-mode forward pass sees the concatenated batch, so BN statistics mix
    clean and adversarial inputs. The loss weighs the two parts by the realised adversarial share
    f' (decision: (1-f')·CE_clean + f'·CE_adv, the intuitive weighting; the original code
    swapped the weights for f ∉ {0.5, 1}).

    Variants of the paper:
    - ``prevent_label_leaking``: attack the model's predicted label instead of the true one
      (Kurakin et al. 2017), so the adversarial example carries no information about y.
    - ``ignore_incorrect``: examples the model misclassifies on the clean input are not attacked
      (they are trained clean, in the adversarial part of the batch).
    - ``friendly_tau``: PGD-K-τ (Zhang et al. 2020): each example stops τ steps after it is
      misclassified (``FriendlyPGD`` with the configured PGD's ε, step size, K, norm and init).
      The per-epoch test curves keep using the configured attack.
    Clean predictions for the first two are taken in the attack's mode, without a graph.

    Under label noise the attack (and "ignore incorrect"'s test) uses the true label, both CE
    terms the noisy one.
    """

    def __init__(
        self,
        *,
        fraction: float,
        prevent_label_leaking: bool,
        ignore_incorrect: bool,
        friendly_tau: int | None,
    ) -> None:
        self.fraction = checks.in_range("fraction", fraction, 0.0, 1.0, low_open=True)
        self.prevent_label_leaking = prevent_label_leaking
        self.ignore_incorrect = ignore_incorrect
        if friendly_tau is not None:
            checks.at_least("friendly_tau", friendly_tau, 0)
        self.friendly_tau = friendly_tau

    def training_attack_for(self, attack: Attack) -> Attack:
        if self.friendly_tau is None:
            return super().training_attack_for(attack)
        return FriendlyPGD.like(attack, self.friendly_tau)

    def split(self, batch_size: int) -> int:
        """Number of clean examples at the front of a batch."""
        return int((1.0 - self.fraction) * batch_size)

    def adversarial(self, ctx: TrainingContext, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial versions of (x, y), computed in the attack's mode and the variant
        (``y``: the true labels)."""
        with ctx.attack_mode(model):
            predicted = y
            if self.prevent_label_leaking or self.ignore_incorrect:
                with torch.no_grad():
                    predicted = model(x).argmax(dim=1)  # (B,)
            target = predicted if self.prevent_label_leaking else y
            x_adv = self.training_attack(model, x, target)
        if self.ignore_incorrect:
            wrong = (predicted != y).view(-1, *[1] * (x.dim() - 1))
            x_adv = torch.where(wrong, x, x_adv)
        return x_adv

    def inputs(self, ctx: TrainingContext, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        split = self.split(len(x))
        y = true_labels(y)
        return torch.cat([x[:split], self.adversarial(ctx, model, x[split:], y[split:])])

    def on(self, ctx: TrainingContext, outputs: Tensor, y: Tensor) -> tuple[Tensor, Stats]:
        # (B, K): one pass, BN saw both parts
        return self.weighted(ctx, outputs, y, self.split(len(outputs)))

    def weighted(
        self, ctx: TrainingContext, logits: Tensor, y: Tensor, split: int
    ) -> tuple[Tensor, Stats]:
        """(1-f')·CE_clean + f'·CE_adv on logits whose first ``split`` rows are clean, on
        ``training_labels(y)``."""
        y = training_labels(y)
        robust = ctx.criterion(logits[split:], y[split:])
        stats = split_stats("robust", logits[split:], y[split:], robust)
        if split == 0:
            return robust, stats
        clean = ctx.criterion(logits[:split], y[:split])
        share = (len(y) - split) / len(y)  # f', the realised adversarial share
        stats.update(split_stats("clean", logits[:split], y[:split], clean))
        return (1.0 - share) * clean + share * robust, stats
