"""Weight perturbations (docs/flatness.md#the-relative-ball): layer selection, the relative ball
B_ξ(w), samplers, ``perturbed(model, layers, ν)``, the one weight ascent (``ascent``: used by
the adversarial and joint attacks and by AWP training) and the weight attacks
(``weight_attack`` config group)."""

from advflat.weights.adversarial_attack import AdversarialWeightAttack
from advflat.weights.attack import (
    Batches,
    WeightAttack,
    WeightPerturbation,
    set_gradient,
    set_loss,
)
from advflat.weights.ball import RelativeBall, group_norms
from advflat.weights.joint import JointWeightInputAttack
from advflat.weights.layers import WeightLayers, select_layers
from advflat.weights.none import NoWeightAttack
from advflat.weights.perturbed import perturbed
from advflat.weights.random_attack import RandomWeightAttack
from advflat.weights.samplers import SAMPLERS

__all__ = [
    "SAMPLERS",
    "AdversarialWeightAttack",
    "Batches",
    "JointWeightInputAttack",
    "NoWeightAttack",
    "RandomWeightAttack",
    "RelativeBall",
    "WeightAttack",
    "WeightLayers",
    "WeightPerturbation",
    "group_norms",
    "perturbed",
    "select_layers",
    "set_gradient",
    "set_loss",
]
