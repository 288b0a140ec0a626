"""Random weight perturbations: the average case of the paper's flatness (docs/flatness.md)."""

from __future__ import annotations

from torch import nn

from advflat.attacks.base import Objective, cross_entropy
from advflat.weights.attack import Batches, WeightAttack, WeightPerturbation, check_sampler
from advflat.weights.samplers import SAMPLERS


class RandomWeightAttack(WeightAttack):
    """ν drawn from ``sampler`` in the relative ball B_ξ(w).

    ``xi`` has no default: the paper's ξ = 0.5 (on the sphere) is set in
    conf/weight_attack/random.yaml. The data is not looked at; ``batches`` is accepted for the
    common weight-attack interface.
    """

    def __init__(
        self,
        *,
        xi: float,
        sampler: str = "sphere",
        include_biases: bool = False,
        filter_wise: bool = False,
    ) -> None:
        super().__init__(xi=xi, include_biases=include_biases, filter_wise=filter_wise)
        self.sampler = check_sampler("sampler", sampler)

    def __call__(
        self, model: nn.Module, batches: Batches = (), objective: Objective = cross_entropy
    ) -> WeightPerturbation:
        layers = self.layers(model)
        return WeightPerturbation(layers, SAMPLERS[self.sampler](self.ball(layers)))
