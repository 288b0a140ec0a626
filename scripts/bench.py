"""`make bench`: speed of advflat against the plain reference loop, written to JSON.

Results go to outputs/bench/<timestamp>.json as
{"device": ..., "results": [{"name", "advflat_images_per_s", "reference_images_per_s", "speedup"}],
 "flatness_seconds": {...}}. Sizes shrink on CPU (a few hundred images) so it runs in minutes.
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from pathlib import Path

import torch

from advflat.benchmarks.training_speed import adversarial_epoch_speed
from advflat.data import Digits
from advflat.data.base import ImageData, Split
from advflat.evaluation.flatness_bench import bench_flatness
from advflat.io import save_json
from advflat.models import LeNet, ResNet18

log = logging.getLogger("bench")


def synthetic(n: int, shape=(3, 32, 32), classes: int = 10) -> ImageData:
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


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=int, help="synthetic CIFAR-size images (default: 256 CPU, 50000 GPU)"
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n = args.images or (50000 if device.type == "cuda" else 256)
    torch.manual_seed(0)

    digits = Digits()
    cifar = synthetic(n)
    results = [
        adversarial_epoch_speed(
            "lenet_digits_pgd7",
            LeNet(num_classes=10, input_shape=digits.input_shape, mean=digits.mean, std=digits.std),
            digits,
            device,
            epsilon=0.2,
            step=0.05,
        ),
        adversarial_epoch_speed(
            "resnet18_synthetic32_pgd7",
            ResNet18(num_classes=10, input_shape=(3, 32, 32)),
            cifar,
            device,
        ),
    ]
    for row in results:
        log.info(
            "%(name)s: advflat %(advflat_images_per_s).1f img/s, "
            "reference %(reference_images_per_s).1f img/s, speedup %(speedup).2fx",
            row,
        )

    model = ResNet18(num_classes=10, input_shape=(3, 32, 32)).to(device).eval()
    x, y = cifar.test.x[:128].to(device), cifar.test.y[:128].to(device)
    flatness = bench_flatness(model, x, y)
    log.info("flatness measures (s, ResNet-18, 128 images, 1 attempt): %s", flatness)

    report = {
        "device": device_name(device),
        "torch": torch.__version__,
        "results": results,
        "flatness_seconds": {"model": "resnet18", "images": len(x), "attempts": 1, **flatness},
    }
    path = args.out / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    save_json(path, report)
    log.info("written %s", path)


if __name__ == "__main__":
    main()
