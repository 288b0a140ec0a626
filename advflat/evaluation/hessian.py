"""Hessian spectra of the clean and the robust loss w.r.t. the conv and linear weights
(docs/flatness.md#hessian-spectrum).

Hessian-vector products by double backprop (Pearlmutter), accumulated over the batches of a
held-out set (paper: the last 500 test images), model in eval mode. The robust Hessian is taken
at FIXED adversarial examples, computed once by the given attack at the unperturbed weights
(the Hessian of the max over δ is not defined where the maximiser jumps).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from advflat.attacks.base import Attack
from advflat.attacks.inputs import validates_inputs
from advflat.core import checks
from advflat.data.base import ImageData, select
from advflat.evaluation.hessian_lanczos import hutchinson_trace, lanczos_pairs
from advflat.evaluation.metric import Metric
from advflat.weights import Batches

log = logging.getLogger(__name__)

HESSIAN_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


def hessian_parameters(model: nn.Module) -> list[Tensor]:
    """The weight tensors of conv and linear layers (no biases, no normalization layers)."""
    params = [
        m.weight
        for m in model.modules()
        if isinstance(m, HESSIAN_LAYERS) and m.weight is not None and m.weight.requires_grad
    ]
    if not params:
        raise ValueError("model has no trainable conv or linear weight for the Hessian")
    return params


def hessian_vector_product(
    model: nn.Module, params: list[Tensor], batches: Batches, vector: list[Tensor]
) -> list[Tensor]:
    """H v for the mean CE over all batches; H is over ``params``, v aligned with them."""
    total = sum(len(y) for _, y in batches)
    product = [torch.zeros_like(p) for p in params]
    for x, y in batches:
        with torch.enable_grad():
            loss = F.cross_entropy(model(x), y, reduction="sum") / total
            gradients = torch.autograd.grad(loss, params, create_graph=True)
            # A sum of tensors (params is never empty); typeshed types sum() as maybe its int start.
            dot = cast(Tensor, sum((g * v).sum() for g, v in zip(gradients, vector, strict=True)))
            batch_product = torch.autograd.grad(dot, params)
        for acc, b in zip(product, batch_product, strict=True):
            acc.add_(b)
    return product


def flat_hvp(
    model: nn.Module, params: list[Tensor], batches: Batches
) -> tuple[Callable[[Tensor], Tensor], int]:
    """H as a function of flat (d,) vectors, for the spectral routines."""
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]

    def matvec(v: Tensor) -> Tensor:
        pieces = [piece.view(shape) for piece, shape in zip(v.split(sizes), shapes, strict=True)]
        hv = hessian_vector_product(model, params, batches, pieces)
        return torch.cat([h.reshape(-1) for h in hv])

    return matvec, sum(sizes)


@validates_inputs("Hessian")
def adversarial_batches(model: nn.Module, batches: Batches, attack: Attack) -> Batches:
    """The batches with x replaced by ``attack``'s adversarial examples (computed once)."""
    return [(attack(model, x, y), y) for x, y in batches]


@validates_inputs("Hessian")  # once per call, not per Hessian-vector product
def hessian_spectrum(
    model: nn.Module,
    batches: Batches,
    *,
    k: int,
    lanczos_steps: int,
    tolerance: float,
    probes: int,
) -> dict[str, Any]:
    """``top`` (k largest, descending), ``bottom`` (k smallest, ascending) eigenvalues of the
    CE Hessian over conv/linear weights, their residuals ``residual_top``/``residual_bottom``
    (||Hv − λv||, v the unit Ritz vector) and ``steps`` (Hessian-vector products spent: at most
    ``lanczos_steps``, fewer once every residual is below ``tolerance`` · |λ_max|); with
    probes > 0 also ``trace`` and ``trace_stderr``."""
    checks.at_least("k", k, 1)
    checks.at_least("lanczos_steps", lanczos_steps, k)
    checks.non_negative("tolerance", tolerance)
    checks.at_least("probes", probes, 0)
    params = hessian_parameters(model)
    matvec, dim = flat_hvp(model, params, batches)
    spec: dict[str, Any] = {"dtype": params[0].dtype, "device": params[0].device}
    # Each product is a double-backward pass over the whole held-out set: show progress.
    with tqdm(total=lanczos_steps + probes, desc="hessian", leave=False, disable=None) as bar:

        def counted(v: Tensor) -> Tensor:
            bar.update(1)
            return matvec(v)

        ritz = lanczos_pairs(counted, dim, lanczos_steps, k=k, tolerance=tolerance, **spec)
        result: dict[str, Any] = {
            "top": ritz.values.flip(0)[:k].tolist(),
            "bottom": ritz.values[:k].tolist(),
            "residual_top": ritz.residuals.flip(0)[:k].tolist(),
            "residual_bottom": ritz.residuals[:k].tolist(),
            "steps": float(ritz.steps),
        }
        if probes > 0:
            result["trace"], result["trace_stderr"] = hutchinson_trace(counted, dim, probes, **spec)
    return result


class HessianSpectrum(Metric):
    """``hessian/{loss}/top_i``, ``hessian/{loss}/bottom_i`` (i = 1..k) and ``trace``.

    Lanczos with at most ``lanczos_steps`` Hessian-vector products gives both ends of the
    spectrum, stopping once every reported eigenvalue's residual ||Hv − λv|| is below
    ``tolerance`` · |λ_max| (``hessian/{loss}/residual/top_i`` and ``residual/bottom_i``, their
    maximum ``residual_max``, and the products spent ``lanczos_steps``: a residual_max far above
    the tolerance says the budget was too small for this model). Hutchinson with ``probes``
    Rademacher vectors gives the trace (``trace_stderr`` its standard error; probes = 0 skips it).
    The robust loss needs ``attack`` (the paper's held-out PGD). ``k``, ``lanczos_steps``,
    ``tolerance``, ``probes`` and ``last`` have no defaults: the paper's (k = 4, at most 200
    products, tolerance 1e-5, 20 probes, the last 500 test images) are set in
    conf/evaluation/paper.yaml.
    """

    def __init__(
        self,
        *,
        loss: str = "clean",
        k: int,
        lanczos_steps: int,
        tolerance: float,
        probes: int,
        attack: Attack | None = None,
        split: str = "test",
        last: int | None,
        batch_size: int = 250,
    ) -> None:
        self.loss = checks.one_of("loss", loss, ("clean", "robust"))
        self.k = checks.at_least("k", k, 1)
        self.lanczos_steps = checks.at_least("lanczos_steps", lanczos_steps, k)
        self.tolerance = checks.non_negative("tolerance", tolerance)
        self.probes = checks.at_least("probes", probes, 0)
        if loss == "robust" and attack is None:
            raise ValueError("attack is required for loss='robust' (the fixed adversarial inputs)")
        self.attack = attack if loss == "robust" else None
        self.split = checks.one_of("split", split, ("train", "test"))
        self.last = None if last is None else checks.at_least("last", last, 1)
        self.batch_size = checks.at_least("batch_size", batch_size, 1)

    def __call__(
        self, model: nn.Module, data: ImageData, results: dict[str, float]
    ) -> dict[str, float]:
        batches: Batches = list(select(data, self.split, last=self.last).batches(self.batch_size))
        if self.attack is not None:
            batches = adversarial_batches(model, batches, self.attack)
        spectrum = hessian_spectrum(
            model, batches, k=self.k, lanczos_steps=self.lanczos_steps,
            tolerance=self.tolerance, probes=self.probes,
        )  # fmt: skip
        prefix = f"hessian/{self.loss}"
        metrics: dict[str, float] = {}
        for end in ("top", "bottom"):
            for i, (value, residual) in enumerate(
                zip(spectrum[end], spectrum[f"residual_{end}"], strict=True), start=1
            ):
                metrics[f"{prefix}/{end}_{i}"] = value
                metrics[f"{prefix}/residual/{end}_{i}"] = residual
        metrics[f"{prefix}/residual_max"] = max(
            spectrum["residual_top"] + spectrum["residual_bottom"]
        )
        metrics[f"{prefix}/lanczos_steps"] = spectrum["steps"]
        if "trace" in spectrum:
            metrics[f"{prefix}/trace"] = spectrum["trace"]
            if self.probes > 1:  # one probe has no spread to report
                metrics[f"{prefix}/trace_stderr"] = spectrum["trace_stderr"]
        log.info("%s: top %s, bottom %s", prefix, spectrum["top"], spectrum["bottom"])
        return metrics
