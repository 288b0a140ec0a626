"""Building blocks shared by the architectures: conv-norm-act, residual blocks, stages."""

from __future__ import annotations

from typing import TypedDict

from torch import Tensor, nn

from advflat.models.layers import (
    check_activation,
    check_normalization,
    has_own_shift,
    make_activation,
    make_normalization,
)


def conv(
    in_channels: int, out_channels: int, kernel: int, *, stride: int = 1, normalization: str
) -> nn.Conv2d:
    """A 'same'-padded conv; biased only when no normalization follows to supply a shift."""
    return nn.Conv2d(
        in_channels,
        out_channels,
        kernel,
        stride=stride,
        padding=kernel // 2,
        bias=not has_own_shift(normalization),
    )


def dropout_layer(p: float) -> nn.Module:
    return nn.Dropout(p) if p > 0 else nn.Identity()


class Style(TypedDict):
    """The options every block takes (names checked by the model that builds them)."""

    normalization: str
    activation: str


def checked_style(normalization: str, activation: str) -> Style:
    """The layer style a model passes to its blocks, its names checked when the model is built."""
    return {
        "normalization": check_normalization(normalization),
        "activation": check_activation(activation),
    }


class BlockStyle(Style):
    """A residual block's options: the layer style plus its dropout probability."""

    dropout: float


class ConvNormAct(nn.Sequential):
    """conv -> normalization -> activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int = 3,
        *,
        stride: int = 1,
        normalization: str,
        activation: str,
    ) -> None:
        super().__init__(
            conv(in_channels, out_channels, kernel, stride=stride, normalization=normalization),
            make_normalization(normalization, out_channels),
            make_activation(activation),
        )


class BasicBlock(nn.Module):
    """ResNet basic block (He et al., CVPR 2016): act(norm(conv(act(norm(conv x)))) + shortcut x);
    the shortcut is a strided 1x1 conv + norm when the shape changes."""

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        stride: int,
        normalization: str,
        activation: str,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            ConvNormAct(
                in_channels,
                out_channels,
                stride=stride,
                normalization=normalization,
                activation=activation,
            ),
            dropout_layer(dropout),
            conv(out_channels, out_channels, 3, normalization=normalization),
            make_normalization(normalization, out_channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                conv(in_channels, out_channels, 1, stride=stride, normalization=normalization),
                make_normalization(normalization, out_channels),
            )
        self.activation = make_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.residual(x) + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation block (He et al., ECCV 2016; Zagoruyko & Komodakis, BMVC 2016):
    conv(drop(act(norm(conv(act(norm x)))))) + shortcut; a projection shortcut (strided 1x1 conv)
    reads the pre-activated input."""

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        stride: int,
        normalization: str,
        activation: str,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.preact = nn.Sequential(
            make_normalization(normalization, in_channels), make_activation(activation)
        )
        self.residual = nn.Sequential(
            conv(in_channels, out_channels, 3, stride=stride, normalization=normalization),
            make_normalization(normalization, out_channels),
            make_activation(activation),
            dropout_layer(dropout),
            conv(out_channels, out_channels, 3, normalization=normalization),
        )
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = conv(
                in_channels, out_channels, 1, stride=stride, normalization=normalization
            )

    def forward(self, x: Tensor) -> Tensor:
        a = self.preact(x)
        shortcut = x if self.shortcut is None else self.shortcut(a)
        return self.residual(a) + shortcut


def residual_stage(
    block: type[BasicBlock] | type[PreActBlock],
    *,
    in_channels: int,
    out_channels: int,
    blocks: int,
    stride: int,
    normalization: str,
    activation: str,
    dropout: float = 0.0,
) -> nn.Sequential:
    """``blocks`` residual blocks; the first changes resolution (``stride``) and width."""
    options: BlockStyle = {
        "normalization": normalization, "activation": activation, "dropout": dropout
    }  # fmt: skip
    first = block(in_channels=in_channels, out_channels=out_channels, stride=stride, **options)
    rest = [
        block(in_channels=out_channels, out_channels=out_channels, stride=1, **options)
        for _ in range(blocks - 1)
    ]
    return nn.Sequential(first, *rest)


def global_pool_head(
    channels: int, *, normalization: str | None = None, activation: str | None = None
) -> nn.Sequential:
    """(norm -> act ->) global average pool -> flatten: (B, C, H, W) -> (B, C).

    Pre-activation networks end with the norm and act that their last block lacks.
    """
    layers: list[nn.Module] = []
    if normalization is not None and activation is not None:
        layers += [make_normalization(normalization, channels), make_activation(activation)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
