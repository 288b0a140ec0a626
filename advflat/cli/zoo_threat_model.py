"""The evaluation of a model zoo's entry at the threat model it was trained for.

A zoo entry (``--model robustbench:cifar10/L2/Standard``) knows its threat model: its norm,
ε and step size become overrides placed before the command line's, so that every attack of the
evaluation (each node with a ``norm`` key: PGD, AutoAttack, the joint weight+input attack)
runs in that ball and an override the user gives still wins.
"""

from __future__ import annotations

from typing import Any

from advflat.models.robustbench_zoo import ThreatModel

NORM = "norm"


def threat_overrides(evaluation: dict[str, Any], threat: ThreatModel) -> list[str]:
    """``evaluation.epsilon=…``, ``evaluation.step_size=…`` and ``evaluation.<node>.norm=…``
    for every node of ``evaluation`` (a composed, resolved config node) that has a norm."""
    lines = [f"evaluation.epsilon={threat.epsilon!r}", f"evaluation.step_size={threat.step_size!r}"]
    lines += [f"evaluation.{path}={threat.norm}" for path in _norm_keys(evaluation, "")]
    return lines


def _norm_keys(node: Any, where: str) -> list[str]:
    """The dotted paths of the ``norm`` keys below ``node`` (lists indexed as Hydra has them)."""
    if isinstance(node, dict):
        children = list(node.items())
    elif isinstance(node, list):
        children = list(enumerate(node))
    else:
        return []
    found = []
    for key, value in children:
        path = f"{where}{key}"
        if key == NORM and isinstance(value, str):
            found.append(path)
        else:
            found += _norm_keys(value, f"{path}.")
    return found
