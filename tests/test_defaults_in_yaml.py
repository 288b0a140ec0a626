"""The scientific values (ε, step sizes, step counts, ξ, learning rates, attempts, budgets,
milestones, sample counts) live in the option files under advflat/conf/ only: the constructors
that take them have no defaults that could drift from the YAML."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

from advflat.attacks import PGD
from advflat.attacks.apgd import APGD, APGDTargeted
from advflat.attacks.fab import FAB, FABTargeted
from advflat.attacks.square import Square
from advflat.data.augmentation import AutoAugmentCutout, CropFlip, Cutout
from advflat.evaluation import (
    AutoAttackRobustness,
    AverageCaseFlatness,
    CleanPerformance,
    HessianSpectrum,
    LossContour,
    LossLandscape,
    RobustPerformance,
    WorstCaseFlatness,
    flatness,
)
from advflat.evaluation.hessian import hessian_spectrum
from advflat.training.schedules import Cosine, Cyclic, MultiStep
from advflat.weights import AdversarialWeightAttack, JointWeightInputAttack, RandomWeightAttack

# callable -> the parameters that must be given (by the YAML or by the caller).
REQUIRED: dict[Callable, tuple[str, ...]] = {
    AdversarialWeightAttack: ("xi", "steps", "lr"),
    JointWeightInputAttack: ("xi", "steps", "weight_lr", "input_lr", "epsilon"),
    RandomWeightAttack: ("xi",),
    AverageCaseFlatness: ("weight_attack", "attempts", "first"),
    WorstCaseFlatness: ("weight_attack", "attempts", "first"),
    flatness: ("kind", "weight_attack", "attempts"),
    LossLandscape: ("direction", "weight_attack", "steps", "scale", "first"),
    LossContour: ("steps", "scale", "first"),
    HessianSpectrum: ("k", "lanczos_steps", "tolerance", "probes", "last"),
    hessian_spectrum: ("k", "lanczos_steps", "tolerance", "probes"),
    CleanPerformance: ("first",),
    RobustPerformance: ("attack", "first"),
    AutoAttackRobustness: ("attack", "first"),
    PGD: ("epsilon", "step_size", "steps", "restarts"),
    APGD: ("epsilon", "steps", "restarts"),
    APGDTargeted: ("epsilon", "steps", "n_target_classes", "restarts"),
    FAB: ("epsilon", "steps", "restarts"),
    FABTargeted: ("epsilon", "steps", "n_target_classes", "restarts"),
    Square: ("epsilon", "queries", "restarts"),
    MultiStep: ("milestones", "gamma"),
    Cyclic: ("peak_lr", "base_lr", "cycle_epochs"),
    Cosine: ("final",),
    CropFlip: ("padding",),
    Cutout: ("size",),
    AutoAugmentCutout: ("cutout",),
}


def parameters(target: Callable) -> dict[str, inspect.Parameter]:
    function = target.__init__ if inspect.isclass(target) else target  # type: ignore[misc]
    return dict(inspect.signature(inspect.unwrap(function)).parameters)


@pytest.mark.parametrize("target", list(REQUIRED), ids=lambda target: target.__name__)
def test_scientific_parameters_have_no_python_default(target):
    given = parameters(target)
    for name in REQUIRED[target]:
        assert name in given, f"{target.__name__} has no parameter {name!r}"
        parameter = given[name]
        assert parameter.default is inspect.Parameter.empty, (
            f"{target.__name__}({name}=...) has the default {parameter.default!r}: the value "
            f"belongs in the option files under advflat/conf/"
        )
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, (
            f"{target.__name__}: {name} must be keyword-only"
        )
