"""What a report records about the machine: the CPU's model, its bf16 flags and torch's reading of
its vector unit, and whether bf16 runs natively on the benchmarked device (CUDA, AMX-BF16 or
AVX-512-BF16) or is emulated, in which case bf16 timings say nothing about bf16 hardware."""

from __future__ import annotations

from typing import Any

import torch

from advflat.core.cpu_features import BF16_FLAGS, cpu_features
from advflat.training.fast_path import bf16_pays


def system_features(device: torch.device) -> dict[str, Any]:
    """``cpu`` (model, one boolean per bf16 flag, torch's capability) and ``bf16_native``."""
    features = cpu_features()
    cpu: dict[str, Any] = {"model": features.model}
    cpu.update({flag: flag in features.bf16_flags for flag in BF16_FLAGS})
    cpu["torch_capability"] = features.torch_capability
    return {"cpu": cpu, "bf16_native": bf16_pays(device)}
