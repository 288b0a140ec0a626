"""PGD adversarial training (Madry et al. 2018) with the seed article's ``fraction`` split."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from advflat import checks
from advflat.attacks.none import NoAttack
from advflat.training.losses import split_stats
from advflat.training.trainer import Trainer


class AdversarialTraining(Trainer):
    """Train on a mix of clean and adversarial examples (SPEC §1).

    ``fraction`` f ∈ (0, 1] is the share of ADVERSARIAL examples: the first int((1-f)·B) examples
    of a batch stay clean, the rest are attacked. The attack runs with the model in eval mode
    (running BN statistics; ``attack_in_eval_mode``), then ONE train-mode forward pass sees the
    concatenated batch, so BN statistics mix clean and adversarial inputs. The loss weighs the two
    parts by the realised adversarial share f' (decision: (1-f')·CE_clean + f'·CE_adv, the
    intuitive weighting; the original code swapped the weights for f ∉ {0.5, 1}).
    """

    def __init__(
        self, *, fraction: float = 1.0, attack_in_eval_mode: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.fraction = checks.in_range("fraction", fraction, 0.0, 1.0, low_open=True)
        self.attack_in_eval_mode = attack_in_eval_mode
        if self.attack is None or isinstance(self.attack, NoAttack):
            raise ValueError("attack must be an input attack for adversarial training, got none")

    def split(self, batch_size: int) -> int:
        """Number of clean examples at the front of a batch."""
        return int((1.0 - self.fraction) * batch_size)

    def attacked(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial versions of (x, y), computed in the configured mode."""
        was_training = model.training
        model.train(not self.attack_in_eval_mode)
        x_adv = self.attack(model, x, y)
        model.train(was_training)
        return x_adv

    def inputs(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        split = self.split(len(x))
        return torch.cat([x[:split], self.attacked(model, x[split:], y[split:])])

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        split = self.split(len(x))
        inputs = self.inputs(model, x, y)
        model.train()
        logits = model(inputs)  # (B, K): one pass, BN sees clean and adversarial examples
        adversarial = self.criterion(logits[split:], y[split:])
        stats = split_stats("adversarial", logits[split:], y[split:], adversarial)
        if split == 0:
            return adversarial, stats
        clean = self.criterion(logits[:split], y[:split])
        share = (len(x) - split) / len(x)  # f', the realised adversarial share
        stats.update(split_stats("clean", logits[:split], y[:split], clean))
        return (1.0 - share) * clean + share * adversarial, stats
