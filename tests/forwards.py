"""A model's forward passes, grouped by the weights they ran at: which (perturbed) model an
attack ran on, and how many forwards it took there."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector


@dataclass(eq=False)
class Run:
    """Consecutive forwards at the same weights (all parameters, flattened)."""

    weights: Tensor
    inputs: list[Tensor] = field(default_factory=list)  # the batch of every forward


class ForwardsByWeights:
    """Records every forward of ``model`` from now on (a forward pre-hook)."""

    def __init__(self, model: nn.Module) -> None:
        self.trained = parameters_to_vector(model.parameters()).detach().clone()
        self.runs: list[Run] = []
        self.hook = model.register_forward_pre_hook(self._record)

    def _record(self, module: nn.Module, args: tuple[Tensor, ...]) -> None:
        weights = parameters_to_vector(module.parameters()).detach()
        if not self.runs or not torch.equal(self.runs[-1].weights, weights):
            self.runs.append(Run(weights.clone()))
        self.runs[-1].inputs.append(args[0].detach().clone())

    def at_trained_weights(self, run: Run) -> bool:
        return torch.equal(run.weights, self.trained)

    def perturbed(self) -> list[Run]:
        """The runs at weights other than the ones the model had when recording began."""
        return [run for run in self.runs if not self.at_trained_weights(run)]

    def count(self) -> int:
        """Forwards recorded so far (all runs)."""
        return sum(len(run.inputs) for run in self.runs)

    def stop(self) -> None:
        """Record nothing more (the model runs without the hook again)."""
        self.hook.remove()
