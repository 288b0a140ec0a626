"""Shared fixtures: tiny data and models so every unit test runs in seconds on a CPU."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from advflat.core.cpu_features import OVERRIDE
from advflat.data.base import ImageData, Split

# Known answers are fp32: CPUs with bf16 units (AMX, AVX-512-BF16) would otherwise turn
# ``trainer.fast.autocast=auto`` on. Set at import time so that subprocesses inherit it.
os.environ[OVERRIDE] = "0"
# One thread per test process (subprocesses inherit it): the tests' tensors are tiny, two
# threads waiting on each other cost more than they share, and `make test` runs one worker
# per core.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "advflat" / "conf"


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


def blobs(n: int, generator: torch.Generator, shape=(1, 4, 4), classes: int = 3) -> Split:
    """Well-separated class-mean images in [0, 1] plus noise: learnable in a few steps."""
    y = torch.randint(0, classes, (n,), generator=generator)
    means = torch.linspace(0.2, 0.8, classes)[y].view(n, 1, 1, 1)
    x = (means + 0.05 * torch.randn((n, *shape), generator=generator)).clamp(0, 1)
    return Split(x, y)


@pytest.fixture
def tiny_data() -> ImageData:
    generator = torch.Generator().manual_seed(0)
    return ImageData(blobs(96, generator), blobs(48, generator), num_classes=3)


class TinyNet(nn.Module):
    """A two-layer MLP on (B, 1, 4, 4) inputs with a BN layer (exercises train/eval modes)."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@pytest.fixture
def tiny_net() -> nn.Module:
    return TinyNet()


@pytest.fixture
def in_models_dir(models_dir, monkeypatch):
    """Work in the test module's ``models_dir`` (a folder holding a user's model module and
    weights), with ``sys.path`` restored afterwards: the user's module is imported from there."""
    monkeypatch.chdir(models_dir)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return models_dir
