"""The metrics the report shows and the words and units it shows them with.

Errors are fractions in the files and percentages in the report; losses are cross-entropies
(nats); flatness is the increase of a loss when the weights are perturbed (nats).
"""

from __future__ import annotations

CLEAN_ERROR = "test/clean_error"
TEST_ROBUST_LOSS = "test/robust_loss/pgd"
GAP = "robust_generalization_gap/pgd"
FLATNESS = {
    "flatness/average/robust": "average-case robust flatness",
    "flatness/worst/robust": "worst-case robust flatness",
    "flatness/average/clean": "average-case clean flatness",
    "flatness/worst/clean": "worst-case clean flatness",
}
TARGETS = {
    TEST_ROBUST_LOSS: "test robust loss (nats)",
    GAP: "robust generalization gap (test − train robust loss, nats)",
}
# The table's columns, in the paper's order.
TABLE = {
    CLEAN_ERROR: "clean error (%)",
    "test/robust_error/pgd": "PGD robust error (%)",
    "test/robust_error/autoattack": "AutoAttack robust error (%)",
    TEST_ROBUST_LOSS: "test robust loss",
    "train/robust_loss/pgd": "train robust loss",
    GAP: "robust gen. gap",
    "flatness/average/robust": "avg. robust flatness",
    "flatness/worst/robust": "worst robust flatness",
    "hessian/robust/top_1": "Hessian top eigenvalue (robust)",
    "hessian/clean/top_1": "Hessian top eigenvalue (clean)",
}


def is_error(key: str) -> bool:
    return "_error" in key


def flatness_label(key: str, xi: float | None) -> str:
    """``average-case robust flatness (Δ loss at ξ = 0.5, nats)``: what the x axis measures."""
    radius = "" if xi is None else f" at ξ = {xi:g}"
    return f"{FLATNESS.get(key, key)} (Δ loss{radius}, nats)"
