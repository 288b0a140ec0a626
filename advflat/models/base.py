"""The skeleton every model shares: whiten -> body (features, (B, D)) -> classifier (logits).

``features(x)`` and ``classifier`` are public so that auxiliary heads (e.g. the rotation head
of self-supervised training, an MLP from ``feature_dim`` to 4 rotations) can sit on the
penultimate features: ``rotation_logits = head(model.features(x))``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from advflat.core.checks import at_least, number
from advflat.models.layers import InputNormalization


def size(name: str, value: int) -> int:
    """A positive integer size (channels, widths, counts)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return at_least(name, value, 1)


def image_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    """(C, H, W) from a tuple or list of three positive integers."""
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape
    ):
        raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {input_shape!r}")
    return shape


def probability(name: str, value: float) -> float:
    number(name, value)
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return value


class ImageClassifier(nn.Module):
    """Base class: inputs (B, C, H, W) in [0, 1] -> logits (B, num_classes).

    Subclasses build ``self.body`` (whitened images -> (B, feature_dim)) and ``self.classifier``
    (the final Linear) after calling ``super().__init__``, which registers ``whiten`` first.
    """

    body: nn.Module
    classifier: nn.Linear

    def __init__(
        self,
        *,
        num_classes: int,
        input_shape: Sequence[int],
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
    ) -> None:
        super().__init__()
        self.num_classes = at_least("num_classes", size("num_classes", num_classes), 2)
        self.input_shape = image_shape(input_shape)
        self.whiten = InputNormalization(channels=self.input_shape[0], mean=mean, std=std)

    @property
    def feature_dim(self) -> int:
        return self.classifier.in_features

    def features(self, x: Tensor) -> Tensor:
        return self.body(self.whiten(x))  # (B, D)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # (B, K)
