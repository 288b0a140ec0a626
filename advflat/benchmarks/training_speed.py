"""Images/s of one PGD adversarial-training epoch: advflat's loop against the reference loop."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
from torch import nn

from advflat.attacks.pgd import PGD
from advflat.benchmarks.reference import reference_epoch
from advflat.data.base import ImageData, Split
from advflat.training import AdversarialTraining
from advflat.training.schedules import Constant


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def adversarial_epoch_speed(
    name: str,
    model: nn.Module,
    data: ImageData,
    device: torch.device,
    *,
    epsilon: float = 8 / 255,
    step: float = 0.007,
    steps: int = 7,
    batch_size: int = 128,
) -> dict[str, float | str]:
    """One epoch each (after a one-batch warm-up) on identical copies of ``model``."""
    data = data.to(device)
    ours, theirs = model.to(device), copy.deepcopy(model).to(device)
    trainer = AdversarialTraining(
        epochs=1,
        batch_size=batch_size,
        optimizer=lambda p: torch.optim.SGD(
            p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
        ),
        scheduler=Constant(),
        test_batches=0,
        attack=PGD(epsilon=epsilon, step_size=step, steps=steps, best=False),
    )
    trainer.prepare(ours, data, seed=0)
    labels = data.train.y
    warm = ImageData(data.train.first(batch_size), data.test, data.num_classes)
    trainer.train_epoch(ours, warm, warm.train.y)
    reference_epoch(
        theirs,
        *_xy(data.train.first(batch_size)),
        device,
        epsilon=epsilon,
        step=step,
        steps=steps,
        batch_size=batch_size,
    )

    advflat_s = timed(lambda: trainer.train_epoch(ours, data, labels), device)
    reference_s = timed(
        lambda: reference_epoch(
            theirs,
            *_xy(data.train),
            device,
            epsilon=epsilon,
            step=step,
            steps=steps,
            batch_size=batch_size,
        ),
        device,
    )
    n = len(data.train)
    return {
        "name": name,
        "images": n,
        "advflat_images_per_s": n / advflat_s,
        "reference_images_per_s": n / reference_s,
        "speedup": reference_s / advflat_s,
    }


def _xy(split: Split):
    return split.x, split.y
