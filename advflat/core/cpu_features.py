"""Whether this CPU has bf16 matrix units, which decides ``trainer.fast.autocast=auto`` on a CPU.

bf16 autocast pays on a CPU only where the instruction set multiplies bf16 natively: Intel AMX
(``amx_bf16``, Sapphire Rapids and later) or AVX-512 BF16 (``avx512_bf16``, Cooper Lake, AMD
Zen 4 and later). Elsewhere oneDNN emulates bf16 with fp32 arithmetic plus conversions, which is
slower than plain fp32. The flags are the ones the Linux kernel lists in ``/proc/cpuinfo``;
where that file is missing (macOS, Windows) no flags are found and bf16 stays off.

``ADVFLAT_CPU_BF16`` overrides the detection: ``0`` treats the CPU as lacking bf16 units, ``1``
as having them. The test suite sets ``0`` so that it computes the same numbers on every machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
OVERRIDE = "ADVFLAT_CPU_BF16"
OVERRIDE_VALUES = {"0": False, "1": True}


@dataclass(frozen=True)
class CpuFeatures:
    """What the report of a CPU run records: the model name, the bf16 flags this CPU has and
    torch's own reading of its vector unit (``torch.backends.cpu.get_cpu_capability``)."""

    model: str
    bf16_flags: tuple[str, ...]
    torch_capability: str

    @property
    def has_bf16_units(self) -> bool:
        return bool(self.bf16_flags)


def parse_cpuinfo(text: str) -> tuple[str, tuple[str, ...]]:
    """The model name and the bf16 flags (of ``BF16_FLAGS``) of the first processor in
    ``/proc/cpuinfo``'s text; ("unknown", ()) for lines it does not have."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    return fields.get("model name", "unknown"), tuple(f for f in BF16_FLAGS if f in flags)


def cpu_features() -> CpuFeatures:
    """This CPU's features as the kernel and torch report them (the override is not applied)."""
    text = CPUINFO.read_text() if CPUINFO.exists() else ""
    model, flags = parse_cpuinfo(text)
    return CpuFeatures(model, flags, torch.backends.cpu.get_cpu_capability())


def cpu_has_bf16_units() -> bool:
    """True where bf16 autocast pays on this CPU: ``ADVFLAT_CPU_BF16`` if set, else the flags."""
    override = os.environ.get(OVERRIDE, "")
    if override:
        if override not in OVERRIDE_VALUES:
            raise ValueError(f"{OVERRIDE} must be 0 or 1 (or unset), got {override!r}")
        return OVERRIDE_VALUES[override]
    return cpu_features().has_bf16_units
