"""Wide residual networks WRN-depth-width (the paper uses WRN-28-10; also 34-10)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from advflat.models.base import ImageClassifier, probability, size
from advflat.models.blocks import (
    BlockStyle,
    PreActBlock,
    checked_style,
    conv,
    global_pool_head,
    residual_stage,
)


class WideResNet(ImageClassifier):
    """Wide ResNet (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016): a 3x3 conv to
    16 filters, 3 stages of (depth - 4) / 6 pre-activation blocks with 16k, 32k, 64k filters
    (k = ``width``; strides 1, 2, 2), dropout between each block's convs, a final norm + act and
    global average pooling. WRN-28-10 has 36.5M parameters for CIFAR-10.
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
        depth: int = 28,
        width: int = 10,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(num_classes=num_classes, input_shape=input_shape, mean=mean, std=std)
        options: BlockStyle = {
            **checked_style(normalization, activation),
            "dropout": probability("dropout", dropout),
        }
        if size("depth", depth) < 10 or (depth - 4) % 6 != 0:
            raise ValueError(
                f"depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, ...), got {depth!r}"
            )
        blocks = (depth - 4) // 6
        widths = [16 * size("width", width) * 2**i for i in range(3)]
        stem = conv(self.input_shape[0], 16, 3, normalization=normalization)
        stages = [
            residual_stage(
                PreActBlock,
                in_channels=c_in,
                out_channels=c_out,
                blocks=blocks,
                stride=1 if i == 0 else 2,
                **options,
            )
            for i, (c_in, c_out) in enumerate(zip([16, *widths[:-1]], widths, strict=True))
        ]
        head = global_pool_head(widths[-1], normalization=normalization, activation=activation)
        self.body = nn.Sequential(stem, *stages, head)
        self.classifier = nn.Linear(widths[-1], self.num_classes)
