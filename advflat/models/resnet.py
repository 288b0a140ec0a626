"""ResNet-18 with the CIFAR stem (the paper's main architecture)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from advflat.models.base import ImageClassifier, size
from advflat.models.blocks import (
    BasicBlock,
    ConvNormAct,
    checked_style,
    global_pool_head,
    residual_stage,
)


class ResNet18(ImageClassifier):
    """ResNet-18 (He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016)
    with the CIFAR stem: a stride-1 3x3 conv, no max-pool, then 4 stages of 2 basic blocks with
    ``channels``, 2x, 4x, 8x filters (strides 1, 2, 2, 2) and global average pooling.
    11.17M parameters for CIFAR-10 at ``channels=64``.
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
        channels: int = 64,
    ) -> None:
        super().__init__(num_classes=num_classes, input_shape=input_shape, mean=mean, std=std)
        options = checked_style(normalization, activation)
        widths = [size("channels", channels) * 2**i for i in range(4)]  # 64, 128, 256, 512
        stem = ConvNormAct(self.input_shape[0], widths[0], **options)
        stages = [
            residual_stage(
                BasicBlock,
                in_channels=c_in,
                out_channels=c_out,
                blocks=2,
                stride=1 if i == 0 else 2,
                **options,
            )
            for i, (c_in, c_out) in enumerate(zip([widths[0], *widths[:-1]], widths, strict=True))
        ]
        self.body = nn.Sequential(stem, *stages, global_pool_head(widths[-1]))
        self.classifier = nn.Linear(widths[-1], self.num_classes)
