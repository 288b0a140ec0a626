"""Average- and worst-case flatness of the clean and the robust loss (Stutz et al.;
docs/flatness.md).

flatness = aggregate over attempts a of L(w + ν_a) − L(w), with ν_a in the relative ball B_ξ(w):
the mean over random ν on the sphere (average case) or the max over adversarial ν (worst case).
For the robust loss, L is the CE at adversarial inputs: PGD on the perturbed model (average
case) or inputs ascended jointly with the weights (worst case), against a stronger PGD reference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from torch import Tensor, nn
from tqdm.auto import tqdm

from advflat.attacks.base import Attack, Objective, cross_entropy
from advflat.attacks.inputs import validates_inputs
from advflat.core import checks
from advflat.data.base import ImageData, Split, select
from advflat.evaluation.flatness_losses import perturbed_loss, set_loss_value
from advflat.evaluation.metric import Metric
from advflat.weights import Batches, WeightAttack

log = logging.getLogger(__name__)

KINDS = ("average", "worst")
LOSSES = ("clean", "robust")
AGGREGATES: dict[str, Callable[[list[float]], float]] = {
    "average": lambda values: float(np.mean(values)),
    "worst": lambda values: float(np.max(values)),
}


@validates_inputs("flatness")  # once per call, not per attempt or batch
def measure_flatness(
    model: nn.Module,
    batches: Batches,
    *,
    kind: str,
    weight_attack: WeightAttack,
    attempts: int,
    attack: Attack | None = None,
    reference_attack: Attack | None = None,
    objective: Objective = cross_entropy,
    reference: float | None = None,
) -> dict:
    """The core loop shared by the notebook function and the metrics.

    ``attack``/``reference_attack`` None means the clean loss; ``objective`` (per-example,
    default CE) is what "loss" means throughout, for the weight attack too. ``reference``: L(w)
    when the caller already has it (the evaluation's shared result). Returns ``value``
    (mean or max of the per-attempt differences), ``reference`` (L(w)), ``attempts``
    (L(w + ν_a) − L(w)), ``std`` (population std of those) and ``losses`` (L(w + ν_a): the
    loss at the perturbation, or the attack's own measurement when it says so — the joint
    attack's per-batch protocol, whose last pass measured it).
    """
    checks.one_of("kind", kind, KINDS)
    checks.at_least("attempts", attempts, 1)
    if reference is None:
        reference = set_loss_value(model, batches, reference_attack, objective)
    losses = []
    for _ in tqdm(range(attempts), desc=f"flatness/{kind}", leave=False, disable=None):
        perturbation = weight_attack(model, batches, objective)
        if perturbation.use_loss and perturbation.loss is not None:
            losses.append(perturbation.loss)  # the attack's own measurement (its last pass)
        else:
            losses.append(perturbed_loss(model, batches, perturbation, attack, objective))
    differences = [loss - reference for loss in losses]
    return {
        "value": AGGREGATES[kind](differences),
        "reference": reference,
        "attempts": differences,
        "std": float(np.std(differences)),
        "losses": losses,
    }


def input_attacks(
    loss: str,
    weight_attack: WeightAttack,
    attack: Attack | None,
    reference_attack: Attack | None,
) -> tuple[Attack | None, Attack | None]:
    """(attack on w + ν, reference attack on w) for ``loss``, checked against the weight attack:
    both None for the clean loss; for the robust loss ``reference_attack`` defaults to
    ``attack``, and ``attack`` may be left out only when the weight attack brings its own
    adversarial inputs (the joint attack)."""
    checks.one_of("loss", loss, LOSSES)
    robust = loss == "robust"
    if reference_attack is None:
        reference_attack = attack
    if weight_attack.perturbs_inputs and not robust:
        raise ValueError("loss must be 'robust' with a weight attack that perturbs inputs")
    if robust and attack is None and not weight_attack.perturbs_inputs:
        raise ValueError("attack is required for loss='robust' (the PGD on w + ν)")
    if robust and reference_attack is None:
        raise ValueError("reference_attack is required for loss='robust' (the PGD on w)")
    # With the clean loss the input attacks are unused (a shared node may still set them).
    return (attack, reference_attack) if robust else (None, None)


@validates_inputs("flatness")
def flatness(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    kind: str,
    weight_attack: WeightAttack,
    attempts: int,
    loss: str = "clean",
    attack: Attack | None = None,
    reference_attack: Attack | None = None,
    batch_size: int = 500,
) -> dict:
    """Flatness of ``model`` on (x (N, C, H, W) in [0, 1], y (N,)).

    ``kind`` "average" | "worst", ``weight_attack`` (the ν of each attempt), ``attempts`` and,
    for ``loss="robust"``, ``attack`` (the PGD on w + ν; not needed with a joint weight-input
    attack) and ``reference_attack`` (the PGD on w; defaults to ``attack``) are given
    explicitly: the paper's settings are the ``flatness_*`` metrics of
    conf/evaluation/paper.yaml with the weight attacks of conf/weight_attack/*.yaml.
    Returns the dict of ``measure_flatness``. The model runs in eval mode; its parameters and
    mode are restored.
    """
    checks.one_of("kind", kind, KINDS)
    attack, reference_attack = input_attacks(loss, weight_attack, attack, reference_attack)
    batches = list(Split(x, y).batches(checks.at_least("batch_size", batch_size, 1)))
    was_training = model.training
    model.eval()
    try:
        return measure_flatness(
            model,
            batches,
            kind=kind,
            weight_attack=weight_attack,
            attempts=attempts,
            attack=attack,
            reference_attack=reference_attack,
        )
    finally:
        model.train(was_training)


class _Flatness(Metric):
    """Shared by the average- and worst-case metrics; subclasses set ``kind``.

    ``weight_attack``, ``attempts`` and ``first`` have no defaults: the paper's (10 attempts on
    the first 1000 test images, the weight attacks of conf/weight_attack/*.yaml) are set in
    conf/evaluation/paper.yaml.
    """

    kind = ""

    def __init__(
        self,
        *,
        loss: str = "clean",
        weight_attack: WeightAttack,
        attempts: int,
        attack: Attack | None = None,
        reference_attack: Attack | None = None,
        split: str = "test",
        first: int | None,
        batch_size: int = 500,
    ) -> None:
        self.loss = checks.one_of("loss", loss, LOSSES)
        self.weight_attack = weight_attack
        self.attempts = checks.at_least("attempts", attempts, 1)
        self.on_examples(split, first, batch_size)
        self.attack, self.reference_attack = input_attacks(
            loss, weight_attack, attack, reference_attack
        )

    def _reference(self, model: nn.Module, data: ImageData) -> float:
        """L(w) from the evaluation's shared results: the clean loss, or the robust loss of
        the shared PGD reference (the average and the worst case read the same one)."""
        if self.reference_attack is None:
            return self.clean_reference(model, data)
        return self.robust_reference(model, data, self.reference_attack).mean_loss()

    def __call__(
        self, model: nn.Module, data: ImageData, results: dict[str, float]
    ) -> dict[str, float]:
        batches = list(select(data, self.split, self.first).batches(self.batch_size))
        measured = measure_flatness(
            model,
            batches,
            kind=self.kind,
            weight_attack=self.weight_attack,
            attempts=self.attempts,
            attack=self.attack,
            reference_attack=self.reference_attack,
            reference=self._reference(model, data),
        )
        prefix = f"flatness/{self.kind}/{self.loss}"
        log.info("%s = %.4f ± %.4f", prefix, measured["value"], measured["std"])
        metrics = {
            prefix: measured["value"],
            f"{prefix}/std": measured["std"],
            f"{prefix}/reference": measured["reference"],
        }
        for i, difference in enumerate(measured["attempts"], start=1):
            metrics[f"{prefix}/attempt_{i}"] = difference
        for key, value in self.weight_attack.recorded().items():  # e.g. .../xi, .../per_batch
            metrics[f"{prefix}/{key}"] = value
        return metrics


class AverageCaseFlatness(_Flatness):
    """Mean over ``attempts`` random ν on the relative sphere of L(w + ν) − L(w) (Stutz et al.).

    ``weight_attack``: a ``RandomWeightAttack`` (paper: ``weight_attack=random``, ξ = 0.5 on the
    sphere). The robust loss needs ``attack`` (paper: PGD-20, step 0.007, 1 restart, run on the
    perturbed model) and ``reference_attack`` (paper: the same with 10 restarts; defaults to
    ``attack``); conf/evaluation/paper.yaml sets all of them.
    """

    kind = "average"


class WorstCaseFlatness(_Flatness):
    """Max over ``attempts`` adversarial ν of L(w + ν) − L(w) (Stutz et al.).

    Clean loss: an ``AdversarialWeightAttack`` (``weight_attack=adversarial``). Robust loss: a
    ``JointWeightInputAttack`` (``weight_attack=joint``; its ε is the threat model) and
    ``reference_attack`` (paper: PGD-20, 10 restarts); conf/evaluation/paper.yaml sets them.
    The weight attack's ξ (and the joint attack's protocol, ``per_batch`` 1.0 / ``full_set``
    0.0) are written next to the value: ``flatness/worst/robust/xi``,
    ``flatness/worst/robust/per_batch``.
    """

    kind = "worst"
