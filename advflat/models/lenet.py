"""A small LeNet-style conv net for tests and the digits quickstart."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from advflat.models.base import ImageClassifier, size
from advflat.models.blocks import ConvNormAct, checked_style
from advflat.models.layers import make_activation


class LeNet(ImageClassifier):
    """LeNet-style CNN (LeCun, Bottou, Bengio, Haffner, "Gradient-based learning applied to
    document recognition", Proc. IEEE 1998): two padded 5x5 conv-norm-act layers (``channels``,
    2x ``channels``) each followed by 2x2 max-pooling, an adaptive average pool to at most 4x4,
    one hidden fully connected layer (``hidden``). Works for any H, W >= 4 (8x8 digits, 28x28
    MNIST, 32x32 CIFAR).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        input_shape: Sequence[int],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        normalization: str = "none",
        activation: str = "relu",
        channels: int = 32,
        hidden: int = 128,
    ) -> None:
        super().__init__(num_classes=num_classes, input_shape=input_shape, mean=mean, std=std)
        options = checked_style(normalization, activation)
        c, h, w = self.input_shape
        if min(h, w) < 4:
            raise ValueError(
                f"input_shape must be at least 4x4 for LeNet, got {self.input_shape!r}"
            )
        width = size("channels", channels)
        # after two 2x2 pools the map is (h // 4, w // 4); pool it to at most 4x4
        pooled = (min(4, h // 4), min(4, w // 4))
        self.body = nn.Sequential(
            ConvNormAct(c, width, 5, **options),
            nn.MaxPool2d(2),
            ConvNormAct(width, 2 * width, 5, **options),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(pooled),
            nn.Flatten(),
            nn.Linear(2 * width * pooled[0] * pooled[1], size("hidden", hidden)),
            make_activation(activation),
        )
        self.classifier = nn.Linear(hidden, self.num_classes)
