"""Useful-FLOP utilisation of adversarial training.

One PGD-k training step of one example costs k forward-backward passes through the attack
(2 forwards' worth of FLOPs each: the backward to the input is about one forward) plus one
forward-backward for the weights (3 forwards: the backward computes input and weight gradients),
so (2k + 3)·F with F the forward FLOPs, counted by ``torch.utils.flop_counter``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# Dense bf16 tensor-core peaks from the vendors' data sheets (FLOP/s), matched by device name.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def forward_flops(model: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> float:
    """FLOPs of one forward pass of one example (2 per multiply-add)."""
    x = torch.rand((1, *input_shape), device=device)
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    model.train(was_training)
    return float(counter.get_total_flops())


def useful_flops_per_example(forward: float, steps: int) -> float:
    return (2 * steps + 3) * forward


def device_peak(device: torch.device) -> float | None:
    """The data-sheet peak FLOP/s of a known GPU; None for CPUs and unknown devices.

    A CPU has no such number here (a timed matrix product is no peak: convolution kernels beat
    it), so utilisation is only reported where a data sheet gives the denominator.
    """
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16.items() if key in name), None)
