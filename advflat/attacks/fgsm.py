"""The fast gradient sign method (Goodfellow et al. 2015) and its "fast AT" variant.

One step of the normalized gradient (signed for L∞, unit L2 norm for L2), projected onto
box ∩ ball. With ``init="zero"`` the step is ε from the clean input: the classic FGSM, exactly
the optimum of the ball for a linear model. With a random start (``"uniform"`` or
``"uniform_norm"``) the step is 1.25·ε, the choice of Wong, Rice and Kolter 2020 ("Fast is
better than free") that makes single-step adversarial training resist catastrophic overfitting;
the projection brings the result back into the ball.

FGSM is PGD with one step, one restart, no momentum and the final (only) iterate.
"""

from __future__ import annotations

from advflat.attacks.norms import NORMS
from advflat.attacks.pgd import PGD
from advflat.core import checks

# Step size in units of ε per start: a full ε from x, 1.25 ε from a random start (Wong et al.).
STEP_FACTOR = {"zero": 1.0, "uniform": 1.25, "uniform_norm": 1.25}


class FGSM(PGD):
    """FGSM (``init="zero"``) or fast-AT FGSM with a random start (step 1.25·ε)."""

    def __init__(self, *, epsilon: float, norm: str = "linf", init: str = "zero") -> None:
        checks.positive("epsilon", epsilon)  # checked before it scales the step size
        checks.one_of("norm", norm, NORMS)
        checks.one_of("init", init, STEP_FACTOR)
        super().__init__(
            epsilon=epsilon,
            step_size=STEP_FACTOR[init] * epsilon,
            steps=1,
            restarts=1,
            norm=norm,
            init=init,
            best=False,
        )
