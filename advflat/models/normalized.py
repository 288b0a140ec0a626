"""A model whose input normalisation lives outside it, made to take images in [0, 1].

advflat's attacks and metrics work in pixel units: ε = 8/255 is a step on the [0, 1] scale.
Many models from elsewhere were trained on normalised images, ``(x - mean) / std``, with the
normalisation done by the data pipeline (``transforms.Normalize``). ``Normalized`` moves that
step into the model, so attacks perturb the pixels and the model still sees what it was trained
on.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from advflat.models.layers import InputNormalization


class Normalized(nn.Module):
    """``module((x - mean) / std)`` for x (B, C, H, W) in [0, 1]; one mean and std per channel.

    The statistics are frozen buffers (advflat's ``InputNormalization``), so weight
    perturbations and the Hessian leave them alone, as they do an advflat model's own.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean, std = [float(m) for m in mean], [float(s) for s in std]
        self.whiten = InputNormalization(channels=len(mean), mean=mean, std=std)
        # Named like the wrapped model of DDP: the input checks find its num_classes there.
        self.module = model

    def forward(self, x: Tensor) -> Tensor:
        return self.module(self.whiten(x))  # (B, K)
