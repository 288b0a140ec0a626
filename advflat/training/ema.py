"""Weight averaging (EMA, paper: τ = 0.9975; docs/training.md#weight-averaging) with batch-norm
recalibration at the end.

torch's ``AveragedModel`` keeps the average; with ``use_buffers=True`` the BN running statistics
are averaged as well, so the attacks that produce the calibration inputs already see sensible
statistics. ``finalize`` then re-estimates the BN statistics of the averaged weights from scratch
(cumulative average over one pass), because averaged weights do not match averaged statistics.

``update`` does the average itself: ``AveragedModel.update_parameters`` branches on its
``n_averaged`` buffer (``if self.n_averaged == 0``), which reads the GPU every step; the count is
kept on the host here (and in the buffer, for state dicts).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class ExponentialMovingAverage:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.averaged = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True
        )
        self.updates = 0  # the host's copy of averaged.n_averaged

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """avg ← decay·avg + (1 − decay)·w for parameters and buffers; the first update copies.

        The same arithmetic as torch's EMA (lerp for floating tensors, the plain formula for
        integer buffers such as BN's batch counts), without reading the device.
        """
        module = self.averaged.module
        pairs = zip(
            [*module.parameters(), *module.buffers()],
            [*model.parameters(), *model.buffers()],
            strict=True,
        )
        floats: tuple[list[Tensor], list[Tensor]] = ([], [])
        for average, current in pairs:
            current = current.detach()
            if self.updates == 0:
                average.copy_(current)
            elif average.is_floating_point():
                floats[0].append(average)
                floats[1].append(current)
            else:
                average.copy_(average * self.decay + current * (1 - self.decay))
        if floats[0]:
            torch._foreach_lerp_(floats[0], floats[1], 1 - self.decay)
        self.averaged.n_averaged.add_(1)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state)
        self.updates = int(self.averaged.n_averaged)  # once, at resume

    @property
    def model(self) -> nn.Module:
        """The averaged model (the weights of every step averaged so far)."""
        return self.averaged.module

    @torch.no_grad()
    def finalize(self, inputs: Iterable[Tensor]) -> nn.Module:
        """Recalibrate BN on ``inputs`` (drawn lazily, computed with ``model``) and return the
        averaged model."""
        module = self.averaged.module
        norms = [m for m in module.modules() if isinstance(m, _BatchNorm)]
        if not norms:
            return module
        with torch.enable_grad():  # the calibration inputs may come from an attack
            calibration = [x.detach() for x in inputs]
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the pass
        module.train()
        for x in calibration:
            module(x)
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        return module.eval()
