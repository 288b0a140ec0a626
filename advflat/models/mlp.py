"""A multilayer perceptron on flattened images, for tests and tiny data."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from advflat.models.base import ImageClassifier, size
from advflat.models.layers import (
    check_activation,
    check_normalization,
    has_own_shift,
    make_activation,
    make_normalization,
)


class MLP(ImageClassifier):
    """Multilayer perceptron (Rumelhart, Hinton, Williams, "Learning representations by
    back-propagating errors", Nature 1986): flatten, then linear-norm-act per entry of
    ``hidden``; an empty ``hidden`` gives a linear (softmax regression) model.
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
        hidden: Sequence[int] = (256, 256),
    ) -> None:
        super().__init__(num_classes=num_classes, input_shape=input_shape, mean=mean, std=std)
        check_normalization(normalization)
        check_activation(activation)
        widths = [math.prod(self.input_shape)] + [size("hidden", h) for h in hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for d_in, d_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                nn.Linear(d_in, d_out, bias=not has_own_shift(normalization)),
                make_normalization(normalization, d_out, spatial=False),
                make_activation(activation),
            ]
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(widths[-1], self.num_classes)
