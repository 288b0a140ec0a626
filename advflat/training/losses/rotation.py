"""Self-supervised adversarial training with rotation prediction (Hendrycks et al. 2019, "Using
self-supervised learning can improve model robustness and uncertainty").

An auxiliary 4-way linear head on the model's penultimate features ``model.features(x)``
predicts by how many quarter turns (k·90°, k ~ U{0,1,2,3} per example, from the run's data
generator) each training input was rotated; loss = AT loss + λ · CE_rotation, λ =
``rotation_weight`` ∈ {0.5, 1, 2, 4, 8} in the paper. The rotated copies are of the inputs the
AT loss trains on (clean part and adversarial part), and both halves go through ONE train-mode
forward of the body, so BN sees them together.

The head is optimised with the model (same optimizer, lr schedule, weight decay) and saved in
``last.pt`` (the loss's state) so a resumed run continues with it; the final model and the
snapshots are the classifier alone (the head is a training device, ``load_model`` needs no new
class).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advflat import checks
from advflat.data.base import ImageData
from advflat.devices import to_device
from advflat.errors import ConfigError
from advflat.training.context import TrainingContext
from advflat.training.losses.adversarial import AdversarialLoss
from advflat.training.losses.base import Forward, Stats, split_stats

ROTATIONS = 4


def rotate(x: Tensor, k: Tensor) -> Tensor:
    """Rotate each square image x[i] (B, C, H, H) by k[i] quarter turns (counter-clockwise)."""
    turns = torch.stack([torch.rot90(x, r, dims=(2, 3)) for r in range(ROTATIONS)])  # (4, B, ...)
    return turns[k, torch.arange(len(x), device=x.device)]


class RotationNet(nn.Module):
    """The classifier and the rotation head as one module: the training forward (and DDP, which
    averages both parts' gradients) sees ``cat([inputs, rotated])`` and returns both outputs."""

    def __init__(self, model: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.model, self.head = model, head

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        model: Any = self.model  # a classifier with features(x) and classifier (checked)
        features = model.features(x)  # (2B, D): one pass over both halves
        half = len(x) // 2
        return model.classifier(features[:half]), self.head(features[half:])


class RotationLoss(AdversarialLoss):
    """The AT loss (all of ``AdversarialLoss``'s options) + λ·CE of the rotation head."""

    def __init__(self, *, rotation_weight: float, **adversarial: Any) -> None:
        super().__init__(**adversarial)
        self.rotation_weight = checks.non_negative("rotation_weight", rotation_weight)
        self.head: nn.Linear | None = None

    def prepare(self, model: nn.Module, data: ImageData, device: torch.device) -> None:
        _, height, width = data.input_shape
        if height != width:
            raise ConfigError(f"rotation prediction needs square images, got {height}×{width}")
        if not hasattr(model, "features") or not hasattr(model, "classifier"):
            raise ConfigError(
                f"rotation prediction needs a model with features(x) and classifier, "
                f"got {type(model).__name__}"
            )
        classifier: Any = model.classifier
        self.head = nn.Linear(classifier.in_features, ROTATIONS).to(device)

    def training_module(self, model: nn.Module) -> nn.Module:
        assert self.head is not None, "prepare() builds the rotation head"
        return RotationNet(model, self.head)

    def on(
        self, ctx: TrainingContext, model: nn.Module, inputs: Tensor, y: Tensor, forward: Forward
    ) -> tuple[Tensor, Stats]:
        # Drawn for the global batch, as one process would, and sliced to this rank's share.
        world = ctx.distributed.world_size
        k = torch.randint(ROTATIONS, (len(inputs) * world,), generator=ctx.generator)
        (k,) = ctx.shard(to_device(k, inputs.device))  # (B,)
        logits, rotation_logits = forward(torch.cat([inputs, rotate(inputs, k)]))  # one pass
        loss, stats = self.weighted(ctx, logits, y, self.split(len(inputs)))
        rotation = F.cross_entropy(rotation_logits, k)
        stats.update(split_stats("rotation", rotation_logits, k, rotation))
        return loss + self.rotation_weight * rotation, stats

    def state_dict(self) -> dict[str, Any]:
        return {} if self.head is None else {"rotation_head": self.head.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.head is not None and "rotation_head" in state:
            self.head.load_state_dict(state["rotation_head"])
