"""One PGD adversarial-training epoch: advflat's loop against the plain reference loop.

Both train identical copies of the model on the same data after a one-batch warm-up. advflat
runs once per precision: fp32 and bf16 autocast (``trainer.fast.autocast`` forced off and on;
the reference loop is fp32). A bf16 row is marked ``bf16_emulated`` where the device has no bf16
units (a CPU without AMX-BF16 or AVX-512-BF16): its time says nothing about bf16 hardware.
Besides images/s and the speedup each row reports advflat's peak memory, its useful-FLOP
utilisation and the cost of one attack step relative to one training step, read off a clean
epoch of the same trainer at the same precision: (T_pgd − T_clean) / steps per batch against
T_clean per batch.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from advflat.attacks.pgd import PGD
from advflat.data.base import ImageData
from advflat.training import AdversarialLoss, CleanLoss, Loss, OptimizerStep, Trainer
from advflat.training.fast_path import FastPath, bf16_pays
from advflat.training.schedules import Constant
from benchmarks.flops import forward_flops, useful_flops_per_example
from benchmarks.reference import reference_epoch
from benchmarks.timing import peak_memory_mb, reset_peak_memory, timed

# A partial of the optimizer class (not a lambda): the trainer can then pick the fused kernel.
paper_sgd = functools.partial(
    torch.optim.SGD, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
)
# ``trainer.fast.autocast`` of each precision; the other switches stay ``auto``.
AUTOCAST = {"fp32": False, "bf16": True}


def _trainer(attack: PGD | None, batch_size: int, precision: str) -> Trainer:
    """PGD adversarial training with ``attack``, or clean training (the same loop) without one."""
    loss: Loss = CleanLoss()
    if attack is not None:
        loss = AdversarialLoss(
            fraction=1.0, prevent_label_leaking=False, ignore_incorrect=False, friendly_tau=None
        )
    return Trainer(
        epochs=1, batch_size=batch_size, optimizer=paper_sgd, scheduler=Constant(), loss=loss,
        update=OptimizerStep(), label_smoothing=0.0, label_noise=0.0, label_noise_per_example=False,
        ema_decay=None, weight_clipping=None, epsilon_warmup_epochs=0, test_batches=0,
        attack=attack, fast=FastPath(autocast=AUTOCAST[precision]),
    )  # fmt: skip


def _advflat_epoch(model, data, device, attack: PGD | None, batch_size: int, precision) -> float:
    """Seconds of one epoch of advflat's trainer, after a one-batch warm-up."""
    trainer = _trainer(attack, batch_size, precision)
    trainer.prepare(model, data, seed=0)
    warm = ImageData(data.train.first(batch_size), data.test, data.num_classes)
    trainer.train_epoch(model, warm, warm.train.y)
    return timed(lambda: trainer.train_epoch(model, data, data.train.y), device)


def _reference_epoch(model, data, device, batch_size: int, **attack) -> float:
    split = data.train
    first = split.first(batch_size)
    reference_epoch(model, first.x, first.y, device, batch_size=batch_size, **attack)
    return timed(
        lambda: reference_epoch(model, split.x, split.y, device, batch_size=batch_size, **attack),
        device,
    )


def adversarial_epoch_speed(
    name: str,
    model: nn.Module,
    data: ImageData,
    device: torch.device,
    *,
    peak_flops: float | None,
    precisions: Sequence[str] = ("fp32",),
    epsilon: float = 8 / 255,
    step: float = 0.007,
    steps: int = 10,
    batch_size: int = 128,
) -> list[dict[str, Any]]:
    """One row per precision (of ``AUTOCAST``): images/s of advflat and of the reference loop,
    speedup, memory, utilisation, step ratio. Each precision trains its own copy of ``model``;
    the reference loop is timed once."""
    data = data.to(device)
    model = model.to(device)
    forward = forward_flops(model, tuple(data.train.x.shape[1:]), device)
    attack = {"epsilon": epsilon, "step": step, "steps": steps}
    reference_s = _reference_epoch(copy.deepcopy(model), data, device, batch_size, **attack)
    pgd = PGD(epsilon=epsilon, step_size=step, steps=steps, restarts=1, best=False)
    rows = []
    for precision in precisions:
        clean_s = _advflat_epoch(copy.deepcopy(model), data, device, None, batch_size, precision)
        reset_peak_memory(device)
        advflat_s = _advflat_epoch(copy.deepcopy(model), data, device, pgd, batch_size, precision)
        n = len(data.train)
        useful = useful_flops_per_example(forward, steps) * n / advflat_s
        rows.append({
            "name": name,
            "precision": precision,
            "bf16_emulated": AUTOCAST[precision] and not bf16_pays(device),
            "images": n,
            "steps": steps,
            "advflat_seconds": advflat_s,
            "advflat_images_per_s": n / advflat_s,
            "reference_images_per_s": n / reference_s,
            "speedup": reference_s / advflat_s,
            "forward_gflops_per_image": forward / 1e9,
            "useful_tflops_per_s": useful / 1e12,
            "useful_flop_utilisation": None if peak_flops is None else useful / peak_flops,
            "peak_memory_mb": peak_memory_mb(device),
            "attack_step_over_training_step": max(advflat_s - clean_s, 0.0) / steps / clean_s,
        })  # fmt: skip
    return rows
