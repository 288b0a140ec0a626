"""The difference-of-logits-ratio (DLR) losses of Croce & Hein, ICML 2020.

With z the logits sorted decreasingly as z_π1 >= z_π2 >= ...:

    DLR(z, y)          = −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3)
    targeted DLR(z, y, t) = −(z_y − z_t) / (z_π1 − (z_π3 + z_π4) / 2)

Both are invariant to shifting and rescaling the logits, so a model cannot hide behind a
saturated softmax (the reason AutoAttack uses them next to cross-entropy). The attacks maximise
them: positive DLR means misclassified.
"""

from __future__ import annotations

from torch import Tensor

from advflat.attacks.autoattack_common import check_classes

# Keeps the ratio finite when the top logits coincide (e.g. a constant model).
TINY = 1e-12


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Untargeted DLR per example (B,); needs at least 3 classes."""
    check_classes("DLR loss", logits, 3)
    ordered = logits.sort(dim=1, descending=True).values  # (B, K)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    # max_{i≠y} z_i is the runner-up when y is on top, the top logit otherwise.
    y_on_top = ordered[:, 0] == z_y
    best_other = ordered[:, 1].where(y_on_top, ordered[:, 0])
    return -(z_y - best_other) / (ordered[:, 0] - ordered[:, 2] + TINY)


def targeted_dlr_loss(logits: Tensor, pairs: Tensor) -> Tensor:
    """Targeted DLR per example (B,); ``pairs`` (B, 2) holds (label y, target t) per row."""
    check_classes("targeted DLR loss", logits, 4)
    ordered = logits.sort(dim=1, descending=True).values  # (B, K)
    z_y = logits.gather(1, pairs[:, :1]).squeeze(1)
    z_t = logits.gather(1, pairs[:, 1:]).squeeze(1)
    scale = ordered[:, 0] - (ordered[:, 2] + ordered[:, 3]) / 2
    return -(z_y - z_t) / (scale + TINY)
