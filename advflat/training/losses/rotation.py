"""Self-supervised adversarial training with rotation prediction (Hendrycks et al. 2019, "Using
self-supervised learning can improve model robustness and uncertainty"), SPEC §1.

An auxiliary 4-way linear head on the model's penultimate features ``model.features(x)``
predicts by how many quarter turns (k·90°, k ~ U{0,1,2,3} per example, from the run's data
generator) each training input was rotated; loss = AT loss + λ · CE_rotation, λ =
``rotation_weight`` ∈ {0.5, 1, 2, 4, 8} in the paper. The rotated copies are of the inputs the
AT loss trains on (clean part and adversarial part), and both halves go through ONE train-mode
forward of the body, so BN sees them together.

The head is optimised with the model (same optimizer, lr schedule, weight decay) and saved in
``last.pt`` (method state) so a resumed run continues with it; the final model and the snapshots
are the classifier alone (the head is a training device, ``load_model`` needs no new class).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advflat import checks
from advflat.data.base import ImageData
from advflat.distributed import Distributed
from advflat.errors import ConfigError
from advflat.fast import to_device
from advflat.training.adversarial import AdversarialTraining
from advflat.training.losses import split_stats
from advflat.training.trainer import device_of

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
        features = self.model.features(x)  # (2B, D): one pass over both halves
        half = len(x) // 2
        return self.model.classifier(features[:half]), self.head(features[half:])


class RotationTraining(AdversarialTraining):
    def __init__(self, *, rotation_weight: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rotation_weight = checks.non_negative("rotation_weight", rotation_weight)
        self.head: nn.Linear | None = None

    def prepare(
        self,
        model: nn.Module,
        data: ImageData,
        seed: int,
        distributed: Distributed | None = None,
    ) -> None:
        _, height, width = data.input_shape
        if height != width:
            raise ConfigError(f"rotation prediction needs square images, got {height}×{width}")
        if not hasattr(model, "features") or not hasattr(model, "classifier"):
            raise ConfigError(
                f"rotation prediction needs a model with features(x) and classifier, "
                f"got {type(model).__name__}"
            )
        self.head = nn.Linear(model.classifier.in_features, ROTATIONS).to(device_of(model))
        # The head trains with the model (training_module): one optimizer and lr schedule.
        super().prepare(model, data, seed, distributed)

    def training_module(self, model: nn.Module) -> nn.Module:
        assert self.head is not None, "prepare() builds the rotation head"
        return RotationNet(model, self.head)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        assert self.head is not None, "prepare() builds the rotation head"
        inputs = self.inputs(model, x, y)  # (B, C, H, W): clean part, then adversarial part
        # Drawn for the global batch, as one process would, and sliced to this rank's share.
        world = self.distributed.world_size
        k = torch.randint(ROTATIONS, (len(x) * world,), generator=self.generator)
        (k,) = self.distributed.shard(to_device(k, x.device))  # (B,)
        both = torch.cat([inputs, rotate(inputs, k)])
        logits, rotation_logits = self.train_forward(model, both)  # (B, K), (B, 4): one pass
        loss, stats = self.weighted_loss(logits, y, self.split(len(x)))
        rotation = F.cross_entropy(rotation_logits, k)
        stats.update(split_stats("rotation", rotation_logits, k, rotation))
        return loss + self.rotation_weight * rotation, stats

    def method_state(self) -> dict[str, Any]:
        state = super().method_state()
        if self.head is not None:
            state["rotation_head"] = self.head.state_dict()
        return state

    def load_method_state(self, state: dict[str, Any]) -> None:
        super().load_method_state(state)
        if self.head is not None and "rotation_head" in state:
            self.head.load_state_dict(state["rotation_head"])
