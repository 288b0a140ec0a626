"""The fast path: bf16 autocast, channels_last, cuDNN autotuning, torch.compile of the
training forward and a fused optimizer, each a switch of ``trainer.fast``.

``auto`` turns a switch on where it is safe and fast and off elsewhere, so runs on CPUs without
bf16 units, and the test suite (which sets ``ADVFLAT_CPU_BF16=0``), compute exactly what they
computed without the fast path:

- ``autocast``: the forward passes of a training step (attack steps and the training forward)
  run in bfloat16 under ``torch.autocast``; parameters, gradients, optimizer state and the
  losses stay float32 (fp32 master weights). bf16 has fp32's range, so no loss scaling.
  ``auto`` is on for CUDA and for CPUs with bf16 matrix units (AMX-BF16 or AVX-512-BF16,
  ``advflat.core.cpu_features``; ``ADVFLAT_CPU_BF16=0|1`` overrides the detection). On other
  CPUs bf16 is emulated and slower than fp32, so ``auto`` leaves it off there.
- ``channels_last``: NHWC memory format for the model's 4-D weights and the image batches
  (cuDNN's tensor-core convolutions read NHWC without a transpose). ``auto``: CUDA only; oneDNN
  on AMX CPUs may prefer NHWC too, but that has not been measured, so CPUs keep NCHW.
- ``cudnn_benchmark``: let cuDNN time its convolution algorithms once per input shape.
- ``compile``: ``torch.compile`` of the TRAINING forward only. Attacks, evaluation and the
  Hessian (double backward) keep the eager model, which ``fit`` also returns.
- ``fused_optimizer``: torch's fused optimizer kernel on CUDA (one launch for all parameters),
  the multi-tensor ``foreach`` implementation elsewhere; only for optimizers built from a torch
  optimizer class (``conf/trainer/optimizer``), whose signature says what it supports.

``true`` forces a switch on any device (bf16 autocast on a CPU without bf16 units is slow: it
exists for tests).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from advflat.core import checks
from advflat.core.configured import Configured
from advflat.core.cpu_features import cpu_has_bf16_units

log = logging.getLogger(__name__)

AUTO = "auto"
TRISTATE = (AUTO, True, False)


def _tristate(name: str, value: Any) -> str | bool:
    # `value in TRISTATE` would accept 1 and 0 (1 == True): compare by identity for booleans.
    if value is True or value is False or value == AUTO:
        return value
    raise ValueError(f"{name} must be auto, true or false, got {value!r}")


@dataclass(frozen=True)
class ActiveFastPath:
    """The switches resolved for one device: plain booleans plus the optimizer kernel."""

    device: torch.device
    autocast: bool = False
    channels_last: bool = False
    cudnn_benchmark: bool = False
    compile: bool = False
    optimizer_kernel: str | None = None  # "fused", "foreach" or None (torch's default)

    def autocast_context(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast for forward passes; backward and optimizer steps go outside it."""
        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def batch(self, x: Tensor) -> Tensor:
        """An image batch in the model's memory format (a copy only with channels_last)."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """channels_last weights (in place) and the global cuDNN autotuning flag."""
        if self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def compiled(self, module: nn.Module) -> nn.Module:
        """``torch.compile(module)`` when enabled (the training forward only)."""
        if not self.compile:
            return module
        # torch's stub types the result as a plain callable; for a Module it is an OptimizedModule.
        return cast(nn.Module, torch.compile(module))

    def optimizer(
        self, factory: Callable[..., Optimizer], params: Iterable[nn.Parameter]
    ) -> Optimizer:
        """``factory(params)`` with the fused/foreach kernel when the optimizer supports it."""
        if self.optimizer_kernel is None:
            return factory(params)
        return factory(params, **{self.optimizer_kernel: True})


class FastPath(Configured):
    """The ``trainer.fast`` switches (see the module docstring); ``resolve`` applies them to a
    device. Each of ``autocast``, ``channels_last`` and ``fused_optimizer`` is auto, true or
    false; ``cudnn_benchmark`` and ``compile`` are true or false."""

    def __init__(
        self,
        *,
        autocast: str | bool = AUTO,
        channels_last: str | bool = AUTO,
        cudnn_benchmark: bool = True,
        compile: bool = False,
        fused_optimizer: str | bool = AUTO,
    ) -> None:
        self.autocast = _tristate("autocast", autocast)
        self.channels_last = _tristate("channels_last", channels_last)
        self.cudnn_benchmark = checks.flag("cudnn_benchmark", cudnn_benchmark)
        self.compile = checks.flag("compile", compile)
        self.fused_optimizer = _tristate("fused_optimizer", fused_optimizer)

    @classmethod
    def off(cls) -> FastPath:
        """Every switch off: the plain fp32 eager loop."""
        return cls(
            autocast=False,
            channels_last=False,
            cudnn_benchmark=False,
            compile=False,
            fused_optimizer=False,
        )

    def resolve(self, device: torch.device, factory: Callable[..., Any]) -> ActiveFastPath:
        """The switches for ``device`` and the optimizer ``factory`` (auto → on for CUDA; bf16
        autocast also on CPUs with bf16 matrix units)."""
        cuda = device.type == "cuda"
        return ActiveFastPath(
            device=device,
            autocast=bf16_pays(device) if self.autocast == AUTO else bool(self.autocast),
            channels_last=cuda if self.channels_last == AUTO else bool(self.channels_last),
            cudnn_benchmark=cuda and self.cudnn_benchmark,
            compile=self.compile,
            optimizer_kernel=self._optimizer_kernel(cuda, factory),
        )

    def check_optimizer(self, factory: Callable[..., Any]) -> None:
        """``fused_optimizer: true`` needs an optimizer that has a fused kernel."""
        if self.fused_optimizer is True and "fused" not in optimizer_kernels(factory):
            raise ValueError(
                "fast.fused_optimizer=true needs a torch optimizer class with a fused kernel "
                f"(conf/trainer/optimizer, _partial_: true), got {factory!r}"
            )

    def _optimizer_kernel(self, cuda: bool, factory: Callable[..., Any]) -> str | None:
        if self.fused_optimizer is False:
            return None
        self.check_optimizer(factory)
        supported = optimizer_kernels(factory)
        if self.fused_optimizer is True:
            return "fused"
        preferred = ("fused", "foreach") if cuda else ("foreach",)
        return next((kernel for kernel in preferred if kernel in supported), None)


def bf16_pays(device: torch.device) -> bool:
    """Whether bf16 autocast is faster than fp32 on ``device``: CUDA, or a CPU with bf16 units."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and cpu_has_bf16_units()


def optimizer_kernels(factory: Callable[..., Any]) -> set[str]:
    """The kernel switches (``fused``, ``foreach``) the optimizer behind ``factory`` accepts.

    Only a torch optimizer class, or a ``functools.partial`` of one (Hydra's ``_partial_``
    nodes), says what it accepts; any other callable gets none, and is called as it is.
    """
    target = factory.func if isinstance(factory, functools.partial) else factory
    if not (inspect.isclass(target) and issubclass(target, Optimizer)):
        return set()
    parameters = inspect.signature(target).parameters
    return {name for name in ("fused", "foreach") if name in parameters}
