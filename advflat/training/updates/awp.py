"""Adversarial weights+inputs training (AWP-style: Wu et al. 2020, "Adversarial weight perturbation
helps robust generalization"; as in Stutz et al. 2021), SPEC §1, and its random variant.

Per batch: PGD on the inputs at the current weights w (attack mode, eval by default), then a
weight perturbation ν inside the layer-wise relative ball B_ξ(w) (||ν_l|| <= ξ·||w_l|| for every
selected tensor: weights of conv/linear layers, never normalization layers, biases only with
``biases``): ν₀ from the ``init`` sampler, then ``steps`` normalized ascent steps on the AT loss
(layer-wise relative gradient normalization g_l·||w_l||/||g_l||, step ``lr``·that, projection
onto the ball). Decision: the first step is taken AT w+ν₀ and the last iterate is used (the
original returned unperturbed weights for 1-step attacks). The gradient of the AT loss (one
train-mode forward) AT w+ν is then applied to the UNPERTURBED weights w, which are restored
bitwise before the optimizer step. Options: a population of P perturbations whose gradients
are averaged (each its own ν₀ and ascent, P train forwards per step: BN running statistics are
updated P times), a curriculum (perturb only while the batch's adversarial loss at w, measured
in attack mode, is below ``curriculum``; paper: 2.1), and gradient-norm clipping (paper: 0.05).

In a multi-process job ν₀ comes from rank 0 and the ascent gradients and the curriculum's loss
are averaged over the ranks, so every rank perturbs alike, as one process would on the global
batch. The curriculum reads its loss on the host: one synchronisation per step (only with it).

``filter_wise`` applies the ball per output filter instead of per tensor. The geometry (layer
selection, B_ξ(w), samplers, bitwise ``perturbed``) is ``advflat.weights``'.

``RWP`` is random weight perturbation training: ν on the relative sphere (radius exactly
ξ·||w_l||), no ascent steps.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn

from advflat import checks
from advflat.training.adversarial import AdversarialTraining
from advflat.weights import SAMPLERS, RelativeBall, WeightLayers, perturbed, select_layers


class AWP(AdversarialTraining):
    """Adversarial training at adversarially perturbed weights (see the module docstring)."""

    def __init__(
        self,
        *,
        xi: float = 0.005,
        steps: int = 1,
        lr: float | None = None,
        init: str = "uniform_norm",
        population: int = 1,
        curriculum: float | None = None,
        gradient_clipping: float | None = 0.05,
        biases: bool = False,
        filter_wise: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.xi = checks.positive("xi", xi)
        self.steps = checks.at_least("steps", steps, 0)
        self.lr = xi if lr is None else checks.positive("lr", lr)
        self.init = checks.one_of("init", init, SAMPLERS)
        self.population = checks.at_least("population", population, 1)
        if curriculum is not None:
            checks.positive("curriculum", curriculum)
        self.curriculum = curriculum
        if gradient_clipping is not None:
            checks.positive("gradient_clipping", gradient_clipping)
        self.gradient_clipping = gradient_clipping
        self.biases = biases
        self.filter_wise = filter_wise

    def step(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            inputs = self.inputs(model, x, y)  # PGD at the unperturbed weights
        layers = select_layers(model, include_biases=self.biases)
        ball = RelativeBall(layers.weights(), self.xi, filter_wise=self.filter_wise)
        active = self.curriculum is None or self.attack_loss(model, inputs, y) < self.curriculum
        count = self.population if active else 1
        totals: dict[str, Tensor] = {}
        for _ in range(count):
            nu = self.weight_perturbation(model, layers, ball, inputs, y) if active else None
            with perturbed(model, layers, nu) if nu is not None else contextlib.nullcontext():
                with self.autocast():
                    loss, stats = self.loss_on(model, inputs, y)  # one train forward at w + ν
                (loss / count).backward()  # gradients at w + ν, averaged over the population
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + value / count
        if self.gradient_clipping is not None:
            nn.utils.clip_grad_norm_(model.parameters(), self.gradient_clipping)
        self.optimizer.step()  # applied to the unperturbed weights w
        self.scheduler.step()
        # torch.full fills on the device; torch.tensor(value, device=...) would copy and wait.
        totals["weights_perturbed"] = torch.full((), float(active), device=x.device)
        return totals

    def attack_loss(self, model: nn.Module, inputs: Tensor, y: Tensor) -> float:
        """The batch's AT loss at w in attack mode (the curriculum's criterion)."""
        with self.attack_mode(model), torch.no_grad(), self.autocast():
            loss, _ = self.weighted_loss(model(inputs), y, self.split(len(inputs)))
        loss = loss.float().reshape(1)
        self.distributed.average_([loss])  # the global batch's loss
        return loss.item()  # the decision is the host's: a sync, only with a curriculum

    def weight_perturbation(
        self, model: nn.Module, layers: WeightLayers, ball: RelativeBall, inputs: Tensor, y: Tensor
    ) -> list[Tensor]:
        """ν₀ from the sampler, then ``steps`` normalized ascent steps, each taken AT w + ν."""
        nu = ball.project(SAMPLERS[self.init](ball))
        self.distributed.broadcast_(nu)  # rank 0's ν₀ on every rank
        split = self.split(len(inputs))
        for _ in range(self.steps):
            with perturbed(model, layers, nu), self.attack_mode(model), self.autocast():
                loss, _ = self.weighted_loss(model(inputs), y, split)
                gradients = torch.autograd.grad(loss, list(layers), allow_unused=True)
            gradients = [
                torch.zeros_like(p) if g is None else g  # a layer the loss does not reach
                for g, p in zip(gradients, layers, strict=True)
            ]
            self.distributed.average_(gradients)  # the ascent direction of the global batch
            # Layer-wise relative normalization: each step moves layer l by lr·||w_l||.
            steps = ball.normalize_gradient(gradients)
            nu = ball.project([v + self.lr * g for v, g in zip(nu, steps, strict=True)])
        return nu


class RWP(AWP):
    """Random weight perturbation training: ν on the relative sphere B_ξ(w), no ascent."""

    def __init__(
        self,
        *,
        xi: float = 0.01,
        population: int = 1,
        curriculum: float | None = None,
        gradient_clipping: float | None = 0.05,
        biases: bool = False,
        filter_wise: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            xi=xi,
            steps=0,
            init="sphere",
            population=population,
            curriculum=curriculum,
            gradient_clipping=gradient_clipping,
            biases=biases,
            filter_wise=filter_wise,
            **kwargs,
        )
