"""SimpleNet, a plain 13-layer conv net (no residuals), adapted to 32x32 inputs."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from advflat.models.base import ImageClassifier, probability
from advflat.models.blocks import ConvNormAct, checked_style, dropout_layer

# (out_channels, kernel) per conv layer; "pool" = 2x2 max-pool (then dropout). 13 convs, 4 pools.
LAYERS: list[tuple[int, int] | str] = [
    (64, 3), (128, 3), (128, 3), (128, 3), "pool",
    (128, 3), (128, 3), (256, 3), "pool",
    (256, 3), (256, 3), "pool",
    (512, 3), (2048, 1), (256, 1), "pool",
    (256, 3),
]  # fmt: skip
POOLS = sum(layer == "pool" for layer in LAYERS)


class SimpleNet(ImageClassifier):
    """SimpleNet (Hasanpour, Rouhani, Fayyaz, Sabokrou, "Lets keep it simple, Using simple
    architectures to outperform deeper and more complex architectures", arXiv 2016): 13
    conv-norm-act layers, mostly 3x3 with two 1x1 bottleneck layers, four 2x2 max-pools and
    global max pooling; 5.48M parameters for CIFAR-10. Needs inputs of at least 16x16.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        input_shape: Sequence[int],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        normalization: str = "bn",
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(num_classes=num_classes, input_shape=input_shape, mean=mean, std=std)
        options = checked_style(normalization, activation)
        probability("dropout", dropout)
        if min(self.input_shape[1:]) < 2**POOLS:
            raise ValueError(
                f"input_shape must be at least {2**POOLS}x{2**POOLS} for SimpleNet "
                f"({POOLS} max-pools), got {self.input_shape!r}"
            )
        layers: list[nn.Module] = []
        channels = self.input_shape[0]
        for layer in LAYERS:
            if isinstance(layer, str):  # "pool"
                layers += [nn.MaxPool2d(2), dropout_layer(dropout)]
            else:
                out_channels, kernel = layer
                layers.append(ConvNormAct(channels, out_channels, kernel, **options))
                channels = out_channels
        self.body = nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(channels, self.num_classes)
