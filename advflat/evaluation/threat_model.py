"""An evaluation's threat model: ``evaluation.epsilon`` and ``evaluation.step_size``.

Every input attack of an evaluation (PGD, AutoAttack, the attacks inside the flatness, Hessian
and landscape metrics, the joint weight+input attack's input step) takes its ε and step size
from these two keys: the packaged conf interpolates them (``${evaluation.epsilon}``), and a
re-evaluation links them again in a run's stored config, which holds resolved values
(``advflat.cli.eval_config``). What each attack actually ran with is written beside the
results, ``threat_model/<metric>/<role>/epsilon``, ``.../step_size`` and ``.../norm/<norm>``
= 1.0 (results are plain floats, so the norm is named by its key, like ``per_batch``).
"""

from __future__ import annotations

from typing import Any

from advflat.attacks.base import Attack

# The evaluation's own keys that make up the threat model.
THREAT_MODEL = ("epsilon", "step_size")
# An attack's key (in its config node and as its attribute) → the threat-model key it follows:
# the joint weight+input attack calls its input step ``input_lr``.
FOLLOWS = {"epsilon": "epsilon", "step_size": "step_size", "input_lr": "step_size"}
PREFIX = "threat_model"


def perturbs_inputs(value: object) -> bool:
    """Whether ``value`` is an attack on the inputs: an input attack, or a weight attack that
    ascends the inputs too (the joint attack of worst-case robust flatness)."""
    return isinstance(value, Attack) or bool(getattr(value, "perturbs_inputs", False))


def recorded(metric: str, attacks: dict[str, Any]) -> dict[str, float]:
    """The ε, step size and norm each of ``metric``'s attacks (role → attack) runs with; an
    attack without one of them (AutoAttack has no step size, no attack has none) records
    only what it has."""
    values: dict[str, float] = {}
    for role, attack in attacks.items():
        where = f"{PREFIX}/{metric}/{role}"
        for attribute, name in FOLLOWS.items():
            value = getattr(attack, attribute, None)
            if value is not None:
                values[f"{where}/{name}"] = float(value)
        norm = getattr(attack, "norm", None)
        if norm is not None:
            values[f"{where}/norm/{norm}"] = 1.0
    return values
