"""Hessian spectra of the clean and the robust loss w.r.t. the conv and linear weights
(docs/flatness.md#hessian-spectrum).

Hessian-vector products by double backprop (Pearlmutter), accumulated over the batches of a
held-out set (paper: the last 500 test images), model in eval mode. The robust Hessian is taken
at FIXED adversarial examples, computed once by the given attack at the unperturbed weights
(the Hessian of the max over δ is not defined where the maximiser jumps).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from advflat.attacks.base import Attack
from advflat.attacks.inputs import validates_inputs
from advflat.core import checks
from advflat.data.base import ImageData, select
from advflat.evaluation.hessian_lanczos import BlockMatVec, block_hutchinson_trace, lanczos_pairs
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


def batch_gradients(
    model: nn.Module, params: list[Tensor], batches: Batches
) -> Iterator[tuple[Tensor, ...]]:
    """Each batch's gradient of its share of the mean CE over all batches, with the graph that
    double backprop differentiates again."""
    total = sum(len(y) for _, y in batches)
    for x, y in batches:
        with torch.enable_grad():
            loss = F.cross_entropy(model(x), y, reduction="sum") / total
            gradient = torch.autograd.grad(loss, params, create_graph=True)
        yield gradient


def hessian_products(
    gradients: Iterable[tuple[Tensor, ...]],
    params: list[Tensor],
    vectors: list[list[Tensor]],
    *,
    keep_graphs: bool,
) -> list[list[Tensor]]:
    """H v for each v in ``vectors`` from the batches' ``gradients``: one double backward per
    batch and vector, each batch's graph built once for all vectors and kept (retain_graph)
    until its last one, or for later calls with ``keep_graphs``. The same operations as one v
    at a time, so the same bits."""
    products = [[torch.zeros_like(p) for p in params] for _ in vectors]
    last = len(vectors) - 1
    for gradient in gradients:
        for index, (product, vector) in enumerate(zip(products, vectors, strict=True)):
            with torch.enable_grad():
                # A sum of tensors (params is never empty); typeshed types sum() as maybe its
                # int start.
                dot = cast(
                    Tensor, sum((g * v).sum() for g, v in zip(gradient, vector, strict=True))
                )
                retain = keep_graphs or index < last  # else free the graph's buffers now
                batch_product = torch.autograd.grad(dot, params, retain_graph=retain)
            for acc, b in zip(product, batch_product, strict=True):
                acc.add_(b)
    return products


def hessian_vector_product(
    model: nn.Module, params: list[Tensor], batches: Batches, vector: list[Tensor]
) -> list[Tensor]:
    """H v for the mean CE over all batches; H is over ``params``, v aligned with them."""
    gradients = batch_gradients(model, params, batches)
    return hessian_products(gradients, params, [vector], keep_graphs=False)[0]


def flat_hvp(
    model: nn.Module, params: list[Tensor], batches: Batches, *, reuse_graph: bool = False
) -> tuple[BlockMatVec, int]:
    """H as a function of blocks of flat vectors (rows (p, d) -> (p, d)), for the spectral
    routines: one pass over the batches per block. With ``reuse_graph`` every batch's gradient
    graph is built once and kept for all later blocks, so a product costs only its double
    backward (the same bits; memory: the graphs of all batches at once)."""
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    held = list(batch_gradients(model, params, batches)) if reuse_graph else None

    def matvecs(rows: Tensor) -> Tensor:
        vectors = [
            [piece.view(shape) for piece, shape in zip(row.split(sizes), shapes, strict=True)]
            for row in rows
        ]
        gradients = batch_gradients(model, params, batches) if held is None else held
        products = hessian_products(gradients, params, vectors, keep_graphs=reuse_graph)
        return torch.stack([torch.cat([h.reshape(-1) for h in hv]) for hv in products])

    return matvecs, sum(sizes)


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
    probe_batch: int = 1,
    reuse_graph: bool = False,
) -> dict[str, Any]:
    """``top`` (k largest, descending), ``bottom`` (k smallest, ascending) eigenvalues of the
    CE Hessian over conv/linear weights, their residuals ``residual_top``/``residual_bottom``
    (||Hv − λv||, v the unit Ritz vector) and ``steps`` (Hessian-vector products spent: at most
    ``lanczos_steps``, fewer once every residual is below ``tolerance`` · |λ_max|); with
    probes > 0 also ``trace`` and ``trace_stderr``. ``probe_batch`` trace probes share each
    batch's gradient graph, ``reuse_graph`` keeps every batch's graph for all products
    (``flat_hvp``); neither changes a bit of the result."""
    checks.at_least("k", k, 1)
    checks.at_least("lanczos_steps", lanczos_steps, k)
    checks.non_negative("tolerance", tolerance)
    checks.at_least("probes", probes, 0)
    checks.at_least("probe_batch", probe_batch, 1)
    checks.flag("reuse_graph", reuse_graph)
    params = hessian_parameters(model)
    matvecs, dim = flat_hvp(model, params, batches, reuse_graph=reuse_graph)
    spec: dict[str, Any] = {"dtype": params[0].dtype, "device": params[0].device}
    # Each product is a double-backward pass over the whole held-out set: show progress.
    with tqdm(total=lanczos_steps + probes, desc="hessian", leave=False, disable=None) as bar:

        def counted(rows: Tensor) -> Tensor:
            bar.update(len(rows))
            return matvecs(rows)

        def matvec(v: Tensor) -> Tensor:
            return counted(v.unsqueeze(0))[0]

        ritz = lanczos_pairs(matvec, dim, lanczos_steps, k=k, tolerance=tolerance, **spec)
        result: dict[str, Any] = {
            "top": ritz.values.flip(0)[:k].tolist(),
            "bottom": ritz.values[:k].tolist(),
            "residual_top": ritz.residuals.flip(0)[:k].tolist(),
            "residual_bottom": ritz.residuals[:k].tolist(),
            "steps": float(ritz.steps),
        }
        if probes > 0:
            result["trace"], result["trace_stderr"] = block_hutchinson_trace(
                counted, dim, probes, probe_batch=probe_batch, **spec
            )
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

    Cost, not results (the same bits either way): ``probe_batch`` trace probes go through the
    held-out set together, each batch's forward pass and gradient graph built once for all of
    them (1: one probe per pass; memory: ``probe_batch`` extra weight-sized products), and
    ``reuse_graph`` builds every batch's gradient graph once for all products, Lanczos steps
    included, so each product costs only its double backward (memory: the graphs of all
    ``last`` examples at once instead of one batch's).
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
        probe_batch: int = 1,
        reuse_graph: bool = False,
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
        self.probe_batch = checks.at_least("probe_batch", probe_batch, 1)
        self.reuse_graph = checks.flag("reuse_graph", reuse_graph)

    def __call__(
        self, model: nn.Module, data: ImageData, results: dict[str, float]
    ) -> dict[str, float]:
        batches: Batches = list(select(data, self.split, last=self.last).batches(self.batch_size))
        if self.attack is not None:
            batches = adversarial_batches(model, batches, self.attack)
        spectrum = hessian_spectrum(
            model, batches, k=self.k, lanczos_steps=self.lanczos_steps,
            tolerance=self.tolerance, probes=self.probes, probe_batch=self.probe_batch,
            reuse_graph=self.reuse_graph,
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
