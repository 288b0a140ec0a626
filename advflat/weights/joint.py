"""Joint adversarial weights and inputs: worst-case ROBUST flatness
(docs/flatness.md#worst-case-robust-flatness)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from advflat.attacks.base import Objective, cross_entropy
from advflat.attacks.norms import INITS, NORMS
from advflat.core import checks
from advflat.weights.ascent import Probe, ascend, schedule, start
from advflat.weights.attack import (
    Batches,
    WeightAttack,
    WeightPerturbation,
    check_sampler,
    set_loss,
    total_examples,
)
from advflat.weights.layers import WeightLayers
from advflat.weights.perturbed import perturbed

# per_batch: one ν step and one δ_b step after every batch, the last iterate (the original's);
# full_set: one ν step per pass over the whole set, the best iterate.
PROTOCOLS = ("per_batch", "full_set")


@dataclass(eq=False)
class JointGradient:
    """At (current weights, inputs): the mean objective over the batches, its weight gradient
    (mean over the examples), the input gradient of every batch and the per-example
    objectives (B,) of every batch."""

    loss: Tensor
    weights: list[Tensor]
    inputs: list[Tensor]
    losses: list[Tensor]


def joint_gradient(
    model: nn.Module,
    layers: WeightLayers,
    batches: Batches,
    inputs: list[Tensor],
    objective: Objective,
) -> JointGradient:
    """Both gradients from one backward pass per batch (see ``JointGradient``)."""
    total = total_examples(batches)
    losses = []
    weight_gradients = [torch.zeros_like(p) for p in layers.parameters]
    input_gradients = []
    for (_, y), x_adv in zip(batches, inputs, strict=True):
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            per_example = objective(model(x_adv), y)  # (B,)
            *batch_gradients, input_gradient = torch.autograd.grad(
                per_example.sum(), [*layers.parameters, x_adv]
            )
        losses.append(per_example.detach())
        for g, b in zip(weight_gradients, batch_gradients, strict=True):
            g.add_(b)
        input_gradients.append(input_gradient)
    loss = torch.stack([batch.sum() for batch in losses]).sum() / total
    return JointGradient(loss, [g / total for g in weight_gradients], input_gradients, losses)


def rebatch(batches: Batches, size: int | None) -> list[tuple[Tensor, Tensor]]:
    """The examples of ``batches`` in order, ``size`` at a time (None: as given)."""
    if size is None:
        return list(batches)
    x = torch.cat([x for x, _ in batches])
    y = torch.cat([y for _, y in batches])
    return list(zip(x.split(size), y.split(size), strict=True))


class JointWeightInputAttack(WeightAttack):
    """Ascend ONE weight perturbation ν in B_ξ(w), shared by the whole set, and per-example
    input perturbations δ in box ∩ ball(ε) together (Stutz et al., worst-case robust flatness).

    Both gradients are taken at (w + ν, x + δ); δ_b ← Proj(δ_b + input_lr·sign ∇_x) per batch,
    ν ← Proj(ν + weight_lr·relative-normalized ∇_w) by the shared weight ascent
    (``advflat.weights.ascent``). The examples are attacked ``batch_size`` at a time (None: in
    the caller's batches; the returned inputs are in the caller's batches either way).
    ``protocol`` says when ν moves and what is returned:

    - ``per_batch`` (the original's): ``steps`` passes over the batches; after EVERY batch one
      ν step on that batch's gradient and one step on that batch's δ_b (kept from pass to
      pass). Returns the last iterate (ν, δ) and, as the loss that flatness uses, the mean of
      the per-example losses of the last pass (each batch's at the ν it was attacked with).
    - ``full_set``: ``steps`` iterations, each with the gradient over the whole set, one δ step
      per batch and one ν step per iteration. Returns the best iterate (ν, δ) by mean
      objective, the last included (flatness re-evaluates the model there).

    ν₀ from ``init`` (not projected), δ₀ from ``input_init``. ``xi``, ``steps``,
    ``weight_lr``, ``input_lr`` and ``epsilon`` have no defaults: the paper's values are set in
    conf/weight_attack/joint.yaml; conf/evaluation/paper.yaml ties input_lr and ε to the
    evaluation's step size and ε (the YAML: ``protocol: per_batch``, ``batch_size: 128``).
    Constructed directly, the class defaults to ``full_set`` in the caller's batches.
    """

    perturbs_inputs = True

    def __init__(
        self,
        *,
        xi: float,
        steps: int,
        weight_lr: float,
        input_lr: float,
        epsilon: float,
        protocol: str = "full_set",
        batch_size: int | None = None,
        norm: str = "linf",
        init: str = "uniform_norm",
        input_init: str = "uniform_norm",
        include_biases: bool = False,
        filter_wise: bool = False,
    ) -> None:
        super().__init__(xi=xi, include_biases=include_biases, filter_wise=filter_wise)
        self.steps = checks.at_least("steps", steps, 1)
        self.weight_lr = checks.positive("weight_lr", weight_lr)
        self.input_lr = checks.positive("input_lr", input_lr)
        self.epsilon = checks.positive("epsilon", epsilon)
        self.protocol = checks.one_of("protocol", protocol, PROTOCOLS)
        self.batch_size = (
            None if batch_size is None else checks.at_least("batch_size", batch_size, 1)
        )
        self.norm = checks.one_of("norm", norm, NORMS)
        self.init = check_sampler("init", init)
        self.input_init = checks.one_of("input_init", input_init, INITS)

    def recorded(self) -> dict[str, float]:
        """ξ (0.00075 in the paper's plots, 0.003 in the original's examples) and the
        protocol (``per_batch`` 1.0, ``full_set`` 0.0): metrics are plain floats."""
        return {"xi": float(self.xi), "per_batch": float(self.protocol == "per_batch")}

    def _start(self, batches: Batches) -> list[Tensor]:
        norm = NORMS[self.norm]
        return [norm.random_start(x, self.epsilon, self.input_init) for x, _ in batches]

    def _input_step(self, x: Tensor, x_adv: Tensor, gradient: Tensor) -> Tensor:
        """One signed (L∞) / normalized (L2) step on δ, projected onto box ∩ ball(ε)."""
        norm = NORMS[self.norm]
        return norm.step_and_project(x_adv, x, gradient, self.input_lr, self.epsilon)

    def __call__(
        self, model: nn.Module, batches: Batches, objective: Objective = cross_entropy
    ) -> WeightPerturbation:
        own = rebatch(batches, self.batch_size)
        if self.protocol == "per_batch":
            result = self._per_batch(model, own, objective)
        else:
            result = self._full_set(model, own, objective)
        if self.batch_size is not None and result.inputs is not None:
            # δ back in the caller's batches, as the contract says (the examples are in order).
            sizes = [len(y) for _, y in batches]
            result.inputs = list(torch.cat(result.inputs).split(sizes))
        return result

    def _full_set(
        self, model: nn.Module, batches: Batches, objective: Objective
    ) -> WeightPerturbation:
        layers = self.layers(model)
        ball = self.ball(layers)
        inputs = self._start(batches)

        def probe(chosen: range, nu: list[Tensor]) -> Probe:
            with perturbed(model, layers, nu):
                measured = joint_gradient(model, layers, batches, inputs, objective)
            at = list(inputs)  # the inputs this ν was measured with (kept with the best ν)
            for i, (x, _) in enumerate(batches):
                inputs[i] = self._input_step(x, inputs[i], measured.inputs[i])
            return Probe(measured.loss, measured.weights, state=at)

        def evaluate(nu: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
            with perturbed(model, layers, nu):  # the last step's result, not yet evaluated
                return set_loss(model, batches, objective, inputs), list(inputs)

        result = ascend(
            start(ball, self.init, project=False),
            probe,
            ball=ball,
            lr=self.weight_lr,
            steps=schedule(len(batches), self.steps, per_batch=False),
            iterate="best",
            evaluate=evaluate,
        )
        return WeightPerturbation(layers, result.nu, inputs=result.state, loss=result.loss)

    def _per_batch(
        self, model: nn.Module, batches: Batches, objective: Objective
    ) -> WeightPerturbation:
        layers = self.layers(model)
        ball = self.ball(layers)
        inputs = self._start(batches)
        steps = schedule(len(batches), self.steps, per_batch=True)
        last_pass = len(steps) - len(batches)  # the index of the last pass's first step
        losses: list[Tensor] = []  # per-example losses of the last pass, on the device
        taken = 0

        def probe(chosen: range, nu: list[Tensor]) -> Probe:
            nonlocal taken
            (b,) = chosen
            with perturbed(model, layers, nu):
                measured = joint_gradient(model, layers, [batches[b]], [inputs[b]], objective)
            inputs[b] = self._input_step(batches[b][0], inputs[b], measured.inputs[0])
            if taken >= last_pass:
                losses.extend(measured.losses)
            taken += 1
            return Probe(measured.loss, measured.weights)

        result = ascend(
            start(ball, self.init, project=False),
            probe,
            ball=ball,
            lr=self.weight_lr,
            steps=steps,
            iterate="last",
        )
        loss = torch.cat(losses).sum() / total_examples(batches)  # one host read per attack
        return WeightPerturbation(layers, result.nu, inputs=inputs, loss=loss.item(), use_loss=True)
