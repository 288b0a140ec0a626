"""Self-supervised adversarial training with rotation prediction (Hendrycks et al. 2019, "Using
self-supervised learning can improve model robustness and uncertainty"), as the flatness paper
trains it: through semi-supervised batches whose "unlabelled" images are rotated copies.

The batch. Every global batch of size B holds n = int(s·B) rotated copies, s =
``rotated_share`` (paper: 0.5), and B − n labelled training images. The labelled images are
drawn without replacement from a fresh permutation of the training set each epoch; the
rotated copies are of training images drawn uniformly WITH replacement, independently of the
labelled ones (a copy is not a copy of an image of the same batch, except by chance), each
turned by its own k·90°, k ~ U{0, 1, 2, 3} (k = 0: upright), and labelled with k instead of
its class. Both are shuffled together. An epoch has as many batches as one pass over the
labelled set at batch size B (so it sees B − n of every B labelled images). All draws come
from the run's data generator, so resumed runs replay exactly. Label noise (either kind)
applies to the labelled images only; augmentation (by the trainer) to every image of the batch.

Which are attacked. As in AT, the first int((1 − f)·b) examples of a (per-process) batch stay
clean and the rest are attacked, f = ``fraction`` (paper: 0.5); the shuffle puts labelled and
rotated images in both parts. Of the attacked part, labelled images are attacked on the main
CE against their label (with AT's variants: predicted label, ignore incorrect, PGD-K-τ), and
rotated images on the CE of the rotation head against their k (the same training attack); both
in the attack's mode. Under per-batch label noise the attack targets the true class, the main
CE the noisy label.

The loss. ONE train-mode forward of the whole batch (clean and adversarial, labelled and
rotated, so BN sees them all) gives the classifier's logits and the rotation head's logits;
loss = CE_main(labelled) + λ · CE_rotation(rotated), λ = ``rotation_weight`` (paper: 0.5, 1, 2,
4, 8). Each CE is the mean over ALL its examples, clean and adversarial together, so the two
parts are weighted by their realised counts (not by f). Label smoothing (the trainer's
criterion) applies to the main CE only.

The head is an MLP on the penultimate features ``model.features(x)``: Linear(D,
``head_hidden``) → ReLU → Linear(``head_hidden``, 4) (paper: 256 hidden units); ``head_hidden``
null or 0 gives a linear head. It is optimised with the model (same optimizer, lr schedule,
weight decay), saved in ``last.pt`` (the loss's state) so a resumed run continues with it, and
left out of the final model and the snapshots: they are the classifier alone.

Augmentation order. As the original, a copy is rotated before the trainer augments it, so the
horizontal flip of a quarter-turned image looks like the flipped image turned the other way:
for k ∈ {1, 3} the flip swaps what the target means. ``rotate_after_augmentation: true``
rotates the augmented image instead (the rotation target is then exact).

How the loss knows the rotated images: their labels are −1 − k (never a class index), and the
batch's labels stay on the CPU, so splitting the batch into its parts reads no GPU memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advflat.core import checks
from advflat.core.devices import to_device
from advflat.core.errors import ConfigError
from advflat.data.base import ImageData
from advflat.training.context import TrainingContext
from advflat.training.labels import training_labels, true_labels
from advflat.training.losses.adversarial import AdversarialLoss
from advflat.training.losses.base import BatchPlan, Stats, split_stats

ROTATIONS = 4
Criterion = Callable[[Tensor, Tensor], Tensor]


def rotate(x: Tensor, k: Tensor) -> Tensor:
    """Rotate each square image x[i] (B, C, H, H) by k[i] quarter turns (counter-clockwise)."""
    turns = torch.stack([torch.rot90(x, r, dims=(2, 3)) for r in range(ROTATIONS)])  # (4, B, ...)
    return turns[k, torch.arange(len(x), device=x.device)]


def rotated_label(k: Tensor) -> Tensor:
    """The label a rotated copy carries through the trainer: −1 − k, never a class index."""
    return -1 - k


def rotation_head(features: int, hidden: int | None) -> nn.Module:
    """The auxiliary 4-way head on D penultimate features (a linear one for hidden 0/None)."""
    if not hidden:
        return nn.Linear(features, ROTATIONS)
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, ROTATIONS))


class RotationNet(nn.Module):
    """The classifier and the rotation head as one module: the training forward (and DDP, which
    averages both parts' gradients) sees the whole batch once and returns both outputs."""

    def __init__(self, model: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.model, self.head = model, head

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        model: Any = self.model  # a classifier with features(x) and classifier (checked)
        features = model.features(x)  # (B, D): one pass for both heads
        return model.classifier(features), self.head(features)


class RotationPredictor(nn.Module):
    """What the attack on rotated images maximises the CE of: the head on the features."""

    num_classes = ROTATIONS  # the attack's input check reads the targets as rotations

    def __init__(self, model: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.model, self.head = model, head
        self.train(model.training)  # the attack restores this module's mode afterwards

    def forward(self, x: Tensor) -> Tensor:
        model: Any = self.model
        return self.head(model.features(x))  # (B, 4)


@dataclass(frozen=True)
class Parts:
    """Which rows of a batch are which (index tensors on the batch's device), from its labels
    (B,) or label pairs (B, 2) (``advflat.training.labels``; rotated copies take no noise)."""

    labelled_clean: Tensor
    labelled_adversarial: Tensor
    rotated_clean: Tensor
    rotated_adversarial: Tensor
    # On the device, per row: the true class (what the attack targets) or the training label
    # (what the main CE trains on) of a labelled image, the rotation k of a copy in both.
    true: Tensor
    training: Tensor

    @classmethod
    def of(cls, y: Tensor, split: int, device: torch.device) -> Parts:
        host = y.cpu()  # the trainer's batches carry CPU labels: no GPU read here
        true, training = true_labels(host), training_labels(host)
        rows = torch.arange(len(host))
        rotated, clean = true < 0, rows < split

        def select(mask: Tensor) -> Tensor:
            return to_device(rows[mask], device)

        def targets(labels: Tensor) -> Tensor:  # −1 − (−1 − k) = k
            return to_device(torch.where(rotated, rotated_label(labels), labels), device)

        return cls(
            labelled_clean=select(~rotated & clean),
            labelled_adversarial=select(~rotated & ~clean),
            rotated_clean=select(rotated & clean),
            rotated_adversarial=select(rotated & ~clean),
            true=targets(true),
            training=targets(training),
        )

    def rotated(self) -> Tensor:
        return torch.cat([self.rotated_clean, self.rotated_adversarial])


def pooled(
    criterion: Criterion, logits: Tensor, y: Tensor, parts: dict[str, Tensor]
) -> tuple[Tensor, Stats]:
    """(mean of ``criterion`` over the rows of all parts, each part's stats): every part is
    weighted by its number of rows. Empty parts are skipped; with none, the loss is a zero
    that still depends on every output (DDP expects a gradient for every parameter)."""
    total, count, stats = logits.sum() * 0.0, 0, Stats()
    for name, rows in parts.items():
        if len(rows) == 0:
            continue
        loss = criterion(logits[rows], y[rows])
        stats.update(split_stats(name, logits[rows], y[rows], loss))
        total, count = total + loss * len(rows), count + len(rows)
    return total / max(count, 1), stats


def rotation_criterion(logits: Tensor, k: Tensor) -> Tensor:
    return F.cross_entropy(logits, k)


class RotationLoss(AdversarialLoss):
    """AT on labelled images + λ·CE of the rotation head on rotated copies (module docstring);
    ``fraction`` and AT's variants are ``AdversarialLoss``'s options."""

    def __init__(
        self,
        *,
        rotation_weight: float,
        rotated_share: float,
        head_hidden: int | None,
        rotate_after_augmentation: bool,
        **adversarial: Any,
    ) -> None:
        super().__init__(**adversarial)
        self.rotation_weight = checks.non_negative("rotation_weight", rotation_weight)
        checks.in_range("rotated_share", rotated_share, 0.0, 1.0, low_open=True)
        if rotated_share == 1.0:
            raise ValueError("rotated_share must be < 1 (a batch needs labelled images)")
        self.rotated_share = rotated_share
        if head_hidden is not None:
            checks.at_least("head_hidden", head_hidden, 0)
        self.head_hidden = head_hidden
        if not isinstance(rotate_after_augmentation, bool):
            raise ValueError(
                f"rotate_after_augmentation must be a bool, got {rotate_after_augmentation!r}"
            )
        self.rotate_after_augmentation = rotate_after_augmentation
        self.head: nn.Module | None = None

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
        self.head = rotation_head(classifier.in_features, self.head_hidden).to(device)

    def training_module(self, model: nn.Module) -> nn.Module:
        assert self.head is not None, "prepare() builds the rotation head"
        return RotationNet(model, self.head)

    # ---- the batches ------------------------------------------------------------------------
    def shares(self, batch_size: int) -> tuple[int, int]:
        """(labelled images, rotated copies) per batch."""
        rotated = int(self.rotated_share * batch_size)
        return batch_size - rotated, rotated

    def draw(
        self, plan: BatchPlan, data: ImageData, labels: Tensor
    ) -> Iterator[tuple[Tensor, Tensor]]:
        steps = data.train.num_batches(plan.batch_size, drop_last=plan.drop_last)
        n_labelled, n_rotated = self.shares(plan.batch_size)
        n_labelled = min(n_labelled, len(labels))
        labels = labels.cpu()  # once per epoch; the batches' labels stay on the CPU
        labelled = torch.randperm(len(labels), generator=plan.generator)
        device = data.train.x.device
        for i in range(steps):
            mine = labelled[i * n_labelled : (i + 1) * n_labelled]
            sources = torch.randint(len(labels), (n_rotated,), generator=plan.generator)
            k = torch.randint(ROTATIONS, (n_rotated,), generator=plan.generator)
            copies = data.train.x[to_device(sources, device)]
            if not self.rotate_after_augmentation:
                copies = rotate(copies, to_device(k, device))
            x = torch.cat([data.train.x[to_device(mine, device)], copies])
            y = torch.cat([plan.relabel(labels[mine]), plan.untouched(rotated_label(k))])
            order = torch.randperm(len(y), generator=plan.generator)
            yield x[to_device(order, device)], y[order]  # the trainer augments and shards it

    # ---- the loss ---------------------------------------------------------------------------
    def inputs(self, ctx: TrainingContext, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        parts = Parts.of(y, self.split(len(x)), x.device)
        x = x.clone()
        if self.rotate_after_augmentation:
            rotated = parts.rotated()
            x[rotated] = rotate(x[rotated], parts.true[rotated])
        labelled, turned = parts.labelled_adversarial, parts.rotated_adversarial
        if len(labelled):
            x[labelled] = self.adversarial(ctx, model, x[labelled], parts.true[labelled])
        if len(turned):
            assert self.head is not None, "prepare() builds the rotation head"
            predictor = RotationPredictor(model, self.head)
            x[turned] = self.attacked(ctx, predictor, x[turned], parts.true[turned])
        return x

    def on(self, ctx: TrainingContext, outputs: Any, y: Tensor) -> tuple[Tensor, Stats]:
        logits, rotation_logits = outputs  # the training module's two heads, one pass
        parts = Parts.of(y, self.split(len(logits)), logits.device)
        main, stats = pooled(
            ctx.criterion,
            logits,
            parts.training,
            {"clean": parts.labelled_clean, "robust": parts.labelled_adversarial},
        )
        rotation, rotation_stats = pooled(
            rotation_criterion,
            rotation_logits,
            parts.training,
            {"rotation_clean": parts.rotated_clean, "rotation_robust": parts.rotated_adversarial},
        )
        stats.update(rotation_stats)
        rotated = parts.rotated()
        if len(rotated):
            stats.update(
                split_stats("rotation", rotation_logits[rotated], parts.training[rotated], rotation)
            )
        return main + self.rotation_weight * rotation, stats

    def state_dict(self) -> dict[str, Any]:
        return {} if self.head is None else {"rotation_head": self.head.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.head is not None and "rotation_head" in state:
            self.head.load_state_dict(state["rotation_head"])
