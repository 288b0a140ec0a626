"""Training augmentations: batched callables ``augment(x (B, C, H, W) in [0, 1], generator) -> x``.

Random choices come from the trainer's ``generator`` (on CPU, so runs are reproducible and
resumable); they are drawn on the generator's device and moved to the data's, so the images can
stay on the GPU (``to_device``: a queued copy from pinned memory, the step loop never waits). The
exception is torchvision's AutoAugment, which draws from torch's global RNG.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from advflat.core.checks import at_least
from advflat.core.devices import to_device


def offsets(high: int, n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """n uniform integers in [0, high), drawn by ``generator`` and moved to ``device``. (n,)"""
    return to_device(
        torch.randint(0, high, (n,), generator=generator, device=generator.device), device
    )


class CropFlip:
    """Random crop with zero padding plus random horizontal flip (the standard CIFAR recipe).

    Each image is padded by ``padding`` zeros on every side and cropped back to H×W at a uniform
    offset in [0, 2·padding]²; with ``flip``, it is mirrored left-right with probability 1/2.
    ``padding`` has no default: the standard 4 px is set in conf/dataset/cifar10.yaml (and the
    other datasets' files).
    """

    def __init__(self, *, padding: int, flip: bool = True) -> None:
        self.padding = at_least("padding", padding, 0)
        self.flip = flip

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        B, C, H, W = x.shape
        p = self.padding
        top = offsets(2 * p + 1, B, generator, x.device)  # (B,)
        left = offsets(2 * p + 1, B, generator, x.device)  # (B,)
        if self.flip:  # drawn only when asked for: the generator's stream stays as it was
            mirror = torch.rand(B, generator=generator, device=generator.device) < 0.5
        else:
            mirror = torch.zeros(B, dtype=torch.bool)
        mirror = to_device(mirror, x.device)
        rows = torch.arange(H, device=x.device)  # (H,)
        cols = torch.arange(W, device=x.device)  # (W,)
        cols = torch.where(mirror[:, None], W - 1 - cols, cols)  # (B, W): a flip reads mirrored
        padded = F.pad(x, (p, p, p, p)).permute(0, 2, 3, 1)  # (B, H + 2p, W + 2p, C)
        batch = torch.arange(B, device=x.device)[:, None, None]  # (B, 1, 1)
        # One gather for the whole batch: output pixel (i, j) of image b reads
        # padded[b, top_b + i, left_b + j'] with j' = j or W - 1 - j.
        crops = padded[batch, (top[:, None] + rows)[:, :, None], (left[:, None] + cols)[:, None, :]]
        return crops.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)


class Cutout:
    """Zero a ``size``×``size`` square per image, centred uniformly in the image, clipped at its
    borders (DeVries and Taylor, 2017). ``size`` 0 leaves images unchanged; no default (the
    paper's 16 px is ``cutout`` in conf/dataset/cifar10_autoaugment.yaml)."""

    def __init__(self, *, size: int) -> None:
        self.size = at_least("size", size, 0)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        B, C, H, W = x.shape
        top = offsets(H, B, generator, x.device) - self.size // 2  # (B,)
        left = offsets(W, B, generator, x.device) - self.size // 2  # (B,)
        rows = torch.arange(H, device=x.device)
        cols = torch.arange(W, device=x.device)
        in_rows = (rows >= top[:, None]) & (rows < top[:, None] + self.size)  # (B, H)
        in_cols = (cols >= left[:, None]) & (cols < left[:, None] + self.size)  # (B, W)
        square = in_rows[:, :, None] & in_cols[:, None, :]  # (B, H, W)
        return x.masked_fill(square[:, None], 0.0)


class AutoAugmentCutout:
    """AutoAugment with its CIFAR-10 policy (Cubuk et al., 2019) per image, then ``Cutout``.

    The paper's "with AutoAugment" models. AutoAugment picks one of the policy's sub-policies per
    image from torch's GLOBAL RNG (torchvision's choice), so only the cutout squares follow the
    trainer's generator; runs stay reproducible through ``torch.manual_seed``. It works on uint8
    images, so inputs are rounded to 1/255 steps first. Costs a Python loop over the batch.
    ``cutout`` (the square's side) has no default: the paper's 16 px is set in
    conf/dataset/cifar10_autoaugment.yaml.
    """

    def __init__(self, *, cutout: int) -> None:
        # Imported here: torchvision takes seconds to import, and only this option needs it.
        from torchvision.transforms import AutoAugment, AutoAugmentPolicy

        self.cutout = Cutout(size=at_least("cutout", cutout, 0))
        self.autoaugment = AutoAugment(AutoAugmentPolicy.CIFAR10)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        images = (x * 255).round().to(torch.uint8)  # (B, C, H, W) uint8, as torchvision needs
        # One call per image: on a batch, AutoAugment would apply one sub-policy to all of them.
        augmented = torch.stack([self.autoaugment(image) for image in images])
        return self.cutout(augmented.to(x.dtype) / 255, generator)
