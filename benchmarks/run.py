"""`make bench`: advflat's speed against the plain reference loop, written to JSON and markdown.

One run on one device (the GPU when there is one): an adversarial-training epoch (PGD-10 for
PreAct ResNet-18 and WRN-28-10, PGD-7 for ResNet-18 and the digits LeNet) on synthetic
CIFAR-size images (50k on a GPU, a few dozen on a CPU), each against the reference loop, in
fp32 and in bf16 autocast where the device has bf16 units (a CPU without AMX-BF16 or
AVX-512-BF16 emulates bf16 many times slower than fp32, so its bf16 rows, which time nothing
real, are left out unless ``--emulated-bf16``; they are then marked emulated); AutoAttack's
time per 1000 images and the time of each flatness measure for ResNet-18. The report records
the CPU (model, bf16 flags, torch's capability). Results go to outputs/bench/<timestamp>.json
and .md (the README shows the CPU table).

``--smoke`` runs the same pipeline on the digits LeNet alone with a handful of images (seconds),
bf16 rows included, so a test can check that the benchmark still runs end to end and writes a
complete report.
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advflat.core.io import save_json, save_text
from advflat.data import Digits
from advflat.data.base import ImageData, Split
from advflat.models import LeNet, PreActResNet18, ResNet18, WideResNet
from advflat.training.fast_path import bf16_pays
from benchmarks.autoattack import bench_autoattack
from benchmarks.flatness import bench_flatness
from benchmarks.flops import device_peak
from benchmarks.system import system_features
from benchmarks.table import markdown
from benchmarks.training_speed import AUTOCAST, adversarial_epoch_speed

log = logging.getLogger("bench")
CIFAR = (3, 32, 32)
DIGITS = (1, 8, 8)
# The attacks of the training runs: PGD-7 on the digits model and ResNet-18, PGD-10 on the
# models the paper trains for 10 steps.
DIGITS_ATTACK = {"epsilon": 0.2, "step": 0.05, "steps": 7}
CIFAR_MODELS: dict[str, tuple[Callable[..., nn.Module], int]] = {
    "resnet18": (ResNet18, 7),
    "preact_resnet18": (PreActResNet18, 10),
    "wrn28_10": (WideResNet, 10),
}


@dataclass(frozen=True)
class Sizes:
    """How much work each part does: images per CIFAR model (the digits run uses all of digits'
    training set unless ``digits_images``), AutoAttack's images and budget, flatness' images.
    ``cifar_model`` is the model AutoAttack and the flatness measures are timed on (None: the
    digits LeNet, on digits-shaped images)."""

    cifar_images: dict[str, int] = field(default_factory=dict)
    digits_images: int | None = None
    autoattack_images: int = 1000
    autoattack_budget: float = 1.0
    flatness_images: int = 1000
    cifar_model: str | None = "resnet18"


GPU = Sizes(dict.fromkeys(CIFAR_MODELS, 50000))
# A CPU epoch over 50k CIFAR images takes hours: a few batches say as much. The robust flatness
# measures attack every image 200+ times (the 10-restart PGD-20 reference): on a CPU a handful
# of images already takes minutes.
CPU = Sizes({"resnet18": 128, "preact_resnet18": 128, "wrn28_10": 16}, None, 16, 0.02, 8)
SMOKE = Sizes({}, 32, 2, 0.01, 2, cifar_model=None)


def synthetic(n: int, shape: tuple[int, ...] = CIFAR, classes: int = 10) -> ImageData:
    generator = torch.Generator().manual_seed(0)
    split = Split(
        torch.rand((n, *shape), generator=generator),
        torch.randint(0, classes, (n,), generator=generator),
    )
    return ImageData(split, split, classes)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def lenet_for(data: ImageData) -> LeNet:
    return LeNet(num_classes=10, input_shape=data.input_shape, mean=data.mean, std=data.std)


def rounded(row: dict[str, Any]) -> dict[str, Any]:
    """The row for the log: floats to 3 decimals; names, counts and blanks (None) as they are."""
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items() if k != "name"}


def timed_precisions(device: torch.device, emulated_bf16: bool) -> tuple[str, ...]:
    """fp32, and bf16 where the device runs it natively or the caller asks for emulated rows."""
    return tuple(AUTOCAST) if emulated_bf16 or bf16_pays(device) else ("fp32",)


def training(
    device: torch.device, sizes: Sizes, peak: float | None, precisions: tuple[str, ...]
) -> list[dict[str, Any]]:
    digits = Digits(train_first=sizes.digits_images)
    runs: list[tuple[str, nn.Module, ImageData, dict[str, Any]]] = [
        ("lenet_digits", lenet_for(digits), digits, DIGITS_ATTACK)
    ]
    for name, images in sizes.cifar_images.items():
        build, steps = CIFAR_MODELS[name]
        model = build(num_classes=10, input_shape=CIFAR)
        runs.append((name, model, synthetic(images), {"steps": steps}))
    results = []
    for name, model, data, attack in runs:
        rows = adversarial_epoch_speed(
            name, model, data, device, peak_flops=peak, precisions=precisions, **attack
        )
        for row in rows:
            log.info("%s %s: %s", name, row["precision"], rounded(row))
        results += rows
    return results


def timed_model(sizes: Sizes, device: torch.device) -> tuple[str, nn.Module, tuple[int, ...]]:
    """The model AutoAttack and the flatness measures are timed on, with its input shape."""
    if sizes.cifar_model is None:
        return "lenet_digits", lenet_for(synthetic(8, DIGITS)).to(device).eval(), DIGITS
    build, _ = CIFAR_MODELS[sizes.cifar_model]
    model = build(num_classes=10, input_shape=CIFAR)
    return sizes.cifar_model, model.to(device).eval(), CIFAR


def report(device: torch.device, sizes: Sizes, precisions: tuple[str, ...]) -> dict[str, Any]:
    """Every measurement of one run, as the JSON written to outputs/bench."""
    peak = device_peak(device)
    result: dict[str, Any] = {
        "device": device_name(device),
        **system_features(device),
        "torch": torch.__version__,
        "peak_flops": peak,
        "results": training(device, sizes, peak, precisions),
    }
    name, model, shape = timed_model(sizes, device)
    autoattack = bench_autoattack(
        model, sizes.autoattack_images, device, budget=sizes.autoattack_budget
    )
    result["autoattack"] = {"model": name, **autoattack}
    log.info("AutoAttack: %s", rounded(autoattack))
    test = synthetic(sizes.flatness_images, shape).test
    x, y = test.x.to(device), test.y.to(device)
    flatness = bench_flatness(model, x, y)
    result["flatness_seconds"] = {"model": name, "images": len(x), "attempts": 1, **flatness}
    log.info("flatness: %s", rounded(flatness))
    return result


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the benchmark and write <out>/<timestamp>.json and .md; returns the JSON's path."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks it runs (secs)")
    parser.add_argument(
        "--emulated-bf16",
        action="store_true",
        help="also time bf16 where the CPU emulates it (slow; says nothing about bf16 hardware)",
    )
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(0)
    sizes = SMOKE if args.smoke else GPU if cuda else CPU
    if args.smoke:  # on tensors this small, more CPU threads only add synchronisation
        torch.set_num_threads(1)
    result = report(device, sizes, timed_precisions(device, args.emulated_bf16 or args.smoke))
    stem = args.out / time.strftime("%Y%m%d-%H%M%S")
    save_json(stem.with_suffix(".json"), result)
    save_text(stem.with_suffix(".md"), markdown(result))
    log.info("written %s.json and .md\n\n%s", stem, markdown(result))
    return stem.with_suffix(".json")
