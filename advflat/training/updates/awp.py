"""Training at perturbed weights: AWP (Wu et al. 2020, "Adversarial weight perturbation helps
robust generalization"; as in Stutz et al. 2021) and its random variant RWP.

Per batch: the loss's inputs (PGD in attack mode) at the current weights w, then a weight
perturbation ν inside the layer-wise relative ball B_ξ(w) (||ν_l|| <= ξ·||w_l|| for every
selected tensor: weights of conv/linear layers, never normalization layers, biases only with
the weight attack's ``include_biases``). ν and its geometry come from the top-level
``weight_attack`` group:

- ``weight_attack=adversarial`` (AWP): ν₀ from its ``init`` sampler (projected onto the
  ball), then its ``steps`` steps of the shared weight ascent (``advflat.weights.ascent``) on
  the same loss (layer-wise relative gradient normalization g_l·||w_l||/||g_l||, step
  ``lr``·that, projection onto the ball). Decision: the first step is taken AT w+ν₀ and the
  LAST iterate is used (no best-iterate selection: it would read the loss on the host every
  step; the original returned unperturbed weights for 1-step attacks).
- ``weight_attack=random`` (RWP): ν from its ``sampler`` (paper: on the sphere), no ascent.

The gradient of the loss (one train-mode forward) AT w+ν is then applied to the UNPERTURBED
weights w, which are restored bitwise before the optimizer step. This rule's own options: a
``population`` of P perturbations whose gradients are averaged (each its own ν₀ and ascent, P
train forwards per step: BN running statistics are updated P times), a ``curriculum`` (perturb
only while the batch's loss at w, measured in attack mode, is below it; paper: 2.1) and
``gradient_clipping`` c (paper: 0.05) with its ``gradient_clipping_mode``:

- ``elementwise`` (the original's): on the steps where the weights are perturbed, every entry
  of each perturbation's gradient (every trained parameter's, taken at w+ν) is clamped to
  [−c, c], and the clamped gradients are averaged over the population — clamped before they
  are summed, as the original adds them up; a step the curriculum leaves unperturbed is a
  plain step, not clamped;
- ``norm``: the total L2 norm of the step's (population-averaged) gradient is clipped to c on
  every step, perturbed or not.

In a multi-process job ν₀ comes from rank 0 and the ascent gradients and the curriculum's loss
are averaged over the ranks (the context's collectives), so every rank perturbs alike, as one
process would on the global batch; the element-wise clamp applies to each perturbation's
gradient after DDP has averaged it over the ranks (the global batch's gradient, as one process
would clamp it). The curriculum reads its loss on the host: one synchronisation per step (only
with it).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from advflat.core import checks
from advflat.core.errors import ConfigError
from advflat.training.context import TrainingContext
from advflat.training.losses.base import Loss, Stats
from advflat.training.updates.base import Update
from advflat.weights import (
    RelativeBall,
    WeightAttack,
    WeightLayers,
    perturbed,
    select_layers,
)
from advflat.weights.ascent import Probe, ascend, schedule, start

# elementwise: every entry of each perturbation's gradient clamped to [−c, c] (the original's);
# norm: the total gradient norm of the step clipped to c (torch's clip_grad_norm_).
CLIPPING_MODES = ("elementwise", "norm")


@dataclass(frozen=True)
class WeightAscent:
    """The training perturbation a weight attack describes: radius, ν₀ sampler, ascent."""

    xi: float
    init: str
    steps: int
    lr: float
    include_biases: bool
    filter_wise: bool

    @classmethod
    def of(cls, attack: WeightAttack) -> WeightAscent:
        """From an attack with ascent steps (``init``, ``steps``, ``lr``: adversarial) or one
        that only samples (``sampler``: random)."""
        init = getattr(attack, "init", None) or getattr(attack, "sampler", None)
        if init is None or attack.perturbs_inputs:
            raise ConfigError(
                f"trainer/update=awp trains with weight_attack=adversarial (AWP) or random "
                f"(RWP), got {type(attack).__name__}"
            )
        steps = int(getattr(attack, "steps", 0))
        lr = float(getattr(attack, "lr", 0.0))
        return cls(attack.xi, init, steps, lr, attack.include_biases, attack.filter_wise)


def add_clamped(
    ctx: TrainingContext, accumulated: list[Tensor | None], bound: float
) -> list[Tensor | None]:
    """``accumulated`` plus the gradient now in ``.grad`` (one perturbation's) clamped entry by
    entry to [−bound, bound]; ``.grad`` is cleared, so the next perturbation's stands alone."""
    member = [None if p.grad is None else p.grad.clamp(-bound, bound) for p in ctx.parameters()]
    ctx.zero_grad()
    if not accumulated:
        return member
    return [_plus(a, m) for a, m in zip(accumulated, member, strict=True)]


def _plus(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """a + b where None is a gradient that was not reached (zero)."""
    if a is None or b is None:
        return b if a is None else a
    return a + b


class AWP(Update):
    """``trainer/update=awp``: the loss's gradient at w + ν applied to w (module docstring)."""

    ascent: WeightAscent

    def __init__(
        self,
        *,
        population: int,
        curriculum: float | None,
        gradient_clipping: float | None,
        gradient_clipping_mode: str,
    ) -> None:
        self.population = checks.at_least("population", population, 1)
        if curriculum is not None:
            checks.positive("curriculum", curriculum)
        self.curriculum = curriculum
        if gradient_clipping is not None:
            checks.positive("gradient_clipping", gradient_clipping)
        self.gradient_clipping = gradient_clipping
        self.gradient_clipping_mode = checks.one_of(
            "gradient_clipping_mode", gradient_clipping_mode, CLIPPING_MODES
        )

    def attach(self, weight_attack: WeightAttack | None) -> None:
        if not weight_attack:
            raise ConfigError(
                "trainer/update=awp needs weight_attack=adversarial (AWP) or random (RWP), "
                "got weight_attack=none"
            )
        self.ascent = WeightAscent.of(weight_attack)

    def step(
        self, ctx: TrainingContext, loss: Loss, model: nn.Module, x: Tensor, y: Tensor
    ) -> Stats:
        ctx.zero_grad()
        with ctx.autocast():
            inputs = loss.inputs(ctx, model, x, y)  # the attack at the unperturbed weights
        layers = select_layers(model, include_biases=self.ascent.include_biases)
        ball = RelativeBall(layers.weights(), self.ascent.xi, filter_wise=self.ascent.filter_wise)
        active = self.curriculum is None or self.loss_at_w(ctx, loss, model, inputs, y) < (
            self.curriculum
        )
        count = self.population if active else 1
        clamp_at = self.clamp_bound(active)
        clamped: list[Tensor | None] = []
        totals: Stats = {}
        for _ in range(count):
            nu = self.perturbation(ctx, loss, model, layers, ball, inputs, y) if active else None
            with perturbed(model, layers, nu) if nu is not None else contextlib.nullcontext():
                with ctx.autocast():
                    value, stats = loss.on(ctx, ctx.train_forward(inputs), y)
                (value / count).backward()  # gradients at w + ν, averaged over the population
            if clamp_at is not None:
                # g_k / P clamped to ±c / P is clamp(g_k, ±c) / P: clamped, then averaged.
                clamped = add_clamped(ctx, clamped, clamp_at / count)
            for key, stat in stats.items():
                totals[key] = totals.get(key, 0.0) + stat / count
        if clamp_at is not None:
            for p, g in zip(ctx.parameters(), clamped, strict=True):
                p.grad = g
        elif self.gradient_clipping_mode == "norm" and self.gradient_clipping is not None:
            nn.utils.clip_grad_norm_(ctx.parameters(), self.gradient_clipping)
        ctx.optimizer_step()  # applied to the unperturbed weights w
        # torch.full fills on the device; torch.tensor(value, device=...) would copy and wait.
        totals["weights_perturbed"] = torch.full((), float(active), device=x.device)
        return totals

    def clamp_bound(self, active: bool) -> float | None:
        """The element-wise bound c of this step: only in ``elementwise`` mode and only when
        the weights are perturbed (None: no element-wise clamping)."""
        elementwise = self.gradient_clipping_mode == "elementwise"
        return self.gradient_clipping if elementwise and active else None

    def loss_at_w(
        self, ctx: TrainingContext, loss: Loss, model: nn.Module, inputs: Tensor, y: Tensor
    ) -> float:
        """The batch's loss at w in attack mode (the curriculum's criterion)."""
        with ctx.attack_mode(model), torch.no_grad(), ctx.autocast():
            value, _ = loss.on(ctx, ctx.plain_forward(inputs), y)
        value = value.float().reshape(1)
        ctx.average_([value])  # the global batch's loss
        return value.item()  # the decision is the host's: a sync, only with a curriculum

    def perturbation(
        self,
        ctx: TrainingContext,
        loss: Loss,
        model: nn.Module,
        layers: WeightLayers,
        ball: RelativeBall,
        inputs: Tensor,
        y: Tensor,
    ) -> list[Tensor]:
        """ν₀ from the sampler (projected, rank 0's), then the shared ascent's steps on this
        batch, each taken AT w + ν, the gradients averaged over the ranks; the last iterate."""

        def probe(batches: range, nu: list[Tensor]) -> Probe:
            # ``batches`` is range(1): the ascent runs on the one training batch.
            with perturbed(model, layers, nu), ctx.attack_mode(model), ctx.autocast():
                value, _ = loss.on(ctx, ctx.plain_forward(inputs), y)
                raw = torch.autograd.grad(value, list(layers), allow_unused=True)
            gradients = [
                torch.zeros_like(p) if g is None else g  # a layer the loss does not reach
                for g, p in zip(raw, layers, strict=True)
            ]
            return Probe(value, gradients)

        nu = start(ball, self.ascent.init, project=True, broadcast=ctx.broadcast_)
        return ascend(
            nu,
            probe,
            ball=ball,
            lr=self.ascent.lr,
            steps=schedule(1, self.ascent.steps, per_batch=False),
            iterate="last",
            average=ctx.average_,  # the ascent direction of the global batch
        ).nu
