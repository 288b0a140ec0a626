"""Entropy-SGD adversarial training (Chaudhari et al. 2017, "Entropy-SGD: biasing gradient
descent into wide valleys"), as an update rule: ``trainer/update=entropy_sgd`` with any loss.

One outer step consumes L = ``inner_steps`` fresh batches. Starting from w' = w and μ = w, each
inner step computes the loss of its batch at the current w' (for adversarial losses: the attack
at w', in attack mode) and takes a Langevin step on it coupled to the anchor w,

    w' ← w' − η'·(∇L(w') + γ_t·(w' − w)) + √η'·ε·N(0, I),     μ ← a·μ + (1 − a)·w',

with η' = ``inner_lr`` (0.1), ε = ``noise`` (1e-4), a = ``mean_decay`` (0.75) and the coupling
γ_t = ``coupling`` · (1 + ``scoping``)^t growing with the outer step t (1e-4, 1e-3). The
weights are then restored to w bitwise and the configured optimizer (momentum, Nesterov, weight
decay, lr schedule: decision, they all work as configured) steps along the outer gradient w − μ.

An epoch is as many outer steps as one pass has batches, so it reads L passes of the data:
compute-matched runs use 150/75/50/30 epochs for L = 1/2/3/5 (the paper's presets).

In a multi-process job the inner gradients come from ``torch.autograd.grad``, which DDP's
hooks never see: the training forward runs without DDP and the context's collectives average
them over the ranks, share rank 0's Langevin noise and, after every outer step, rank 0's BN
statistics, so all ranks move w' alike.

Decision (stability): γ_t is capped at 1/η'. Past that point the explicit Langevin step would
overshoot the anchor and diverge (with the paper's values after ~12k outer steps, about epoch
31 of 150 at batch 128); at the cap each inner step restarts from w, the scoping limit.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor, nn

from advflat.core import checks
from advflat.training.context import TrainingContext
from advflat.training.losses.base import Loss, Stats
from advflat.training.updates.base import Batches, Update


class EntropySGD(Update):
    """``trainer/update=entropy_sgd`` (see the module docstring)."""

    data_parallel = False  # the inner gradients are averaged by hand (module docstring)

    def __init__(
        self,
        *,
        inner_steps: int,
        inner_lr: float,
        noise: float,
        coupling: float,
        scoping: float,
        mean_decay: float,
    ) -> None:
        self.inner_steps = checks.at_least("inner_steps", inner_steps, 1)
        self.inner_lr = checks.positive("inner_lr", inner_lr)
        self.noise = checks.non_negative("noise", noise)
        self.coupling = checks.non_negative("coupling", coupling)
        self.scoping = checks.non_negative("scoping", scoping)
        self.mean_decay = checks.in_range("mean_decay", mean_decay, 0.0, 1.0)
        self.outer_steps = 0
        self.passes_per_epoch = self.inner_steps

    def prepare(self) -> None:
        self.outer_steps = 0

    def gamma(self) -> float:
        """The scoped coupling γ_t, capped at 1/η' (see the module docstring)."""
        scoped = self.coupling * math.exp(self.outer_steps * math.log1p(self.scoping))
        return min(scoped, 1.0 / self.inner_lr)

    def steps(self, batches: Batches) -> Batches:
        """Groups of L consecutive batches (concatenated) from the epoch's L passes."""
        while group := list(itertools.islice(batches, self.inner_steps)):
            if len(group) < self.inner_steps:
                return
            yield torch.cat([x for x, _ in group]), torch.cat([y for _, y in group])

    def step(
        self, ctx: TrainingContext, loss: Loss, model: nn.Module, x: Tensor, y: Tensor
    ) -> Stats:
        params = [p for p in ctx.parameters() if p.requires_grad]
        anchor = [p.detach().clone() for p in params]  # w
        mean = [w.clone() for w in anchor]  # μ
        gamma = self.gamma()
        totals: Stats = {}
        for x_inner, y_inner in zip(
            x.tensor_split(self.inner_steps), y.tensor_split(self.inner_steps), strict=True
        ):
            with ctx.autocast():  # a fresh batch at w'
                inputs = loss.inputs(ctx, model, x_inner, y_inner)
                value, stats = loss.on(ctx, ctx.train_forward(inputs), y_inner)
            gradients = [
                torch.zeros_like(p) if g is None else g  # a parameter the loss skips
                for g, p in zip(
                    torch.autograd.grad(value, params, allow_unused=True), params, strict=True
                )
            ]
            ctx.average_(gradients)  # the global batch's gradient
            self._langevin_step(ctx, params, gradients, anchor, mean, gamma)
            for key, stat in stats.items():
                totals[key] = totals.get(key, 0.0) + stat * (len(y_inner) / len(y))
        with torch.no_grad():
            for p, w, m in zip(params, anchor, mean, strict=True):
                p.grad = w - m  # the outer gradient w − μ
                p.copy_(w)  # bitwise back to the anchor before the optimizer moves it
        ctx.optimizer_step()
        self.outer_steps += 1
        ctx.broadcast_([b for b in model.buffers() if b.is_floating_point()])
        # γ_t, to watch the scoping (torch.full: no host-to-device copy to wait for)
        totals["coupling"] = torch.full((), gamma, device=x.device)
        return totals

    @torch.no_grad()
    def _langevin_step(
        self,
        ctx: TrainingContext,
        params: list[nn.Parameter],
        gradients: list[Tensor],
        anchor: list[Tensor],
        mean: list[Tensor],
        gamma: float,
    ) -> None:
        noise: list[Tensor | None] = (
            [torch.randn_like(p) for p in params] if self.noise else [None] * len(params)
        )
        if self.noise:
            ctx.broadcast_([n for n in noise if n is not None])  # one draw for all ranks
        for p, g, w, m, n in zip(params, gradients, anchor, mean, noise, strict=True):
            update = g + gamma * (p - w) if gamma else g
            p.add_(update, alpha=-self.inner_lr)
            if n is not None:
                p.add_(n, alpha=math.sqrt(self.inner_lr) * self.noise)
            m.mul_(self.mean_decay).add_(p, alpha=1.0 - self.mean_decay)

    def state_dict(self) -> dict[str, Any]:
        return {"outer_steps": self.outer_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.outer_steps = int(state.get("outer_steps", 0))
