"""Wall-clock cost of each flatness measure, for ``make bench``.

``bench_flatness(model, x, y)`` runs every measure once with the paper's settings (fewer attempts
by default) and returns seconds per measure; scripts/bench.py calls it for resnet18 on
synthetic 32×32×3 images, on the GPU when there is one. The settings are read from the packaged
conf/evaluation/paper.yaml (its ``flatness_*`` metrics), not repeated here.
"""

from __future__ import annotations

import functools

from omegaconf import OmegaConf
from torch import Tensor, nn

from advflat.cli.eval_config import packaged_config
from advflat.core.config import build
from advflat.data.base import Split
from advflat.evaluation.flatness import AverageCaseFlatness, WorstCaseFlatness, flatness
from advflat.evaluation.hessian import hessian_spectrum
from benchmarks.timing import timed

MEASURES = [(kind, loss) for kind in ("average", "worst") for loss in ("clean", "robust")]


def paper_flatness_metrics(
    epsilon: float | None = None,
) -> dict[tuple[str, str], AverageCaseFlatness | WorstCaseFlatness]:
    """The four ``flatness_{kind}_{loss}`` metrics of ``evaluation=paper``, built from the
    packaged conf (at ``epsilon`` instead of the evaluation's ε when given)."""
    overrides = ["evaluation=paper"]
    if epsilon is not None:
        overrides.append(f"evaluation.epsilon={epsilon!r}")
    metrics = OmegaConf.create(packaged_config(overrides)).evaluation.metrics
    return {
        (kind, loss): build(metrics[name], f"evaluation.metrics.{name}")
        for kind, loss in MEASURES
        for name in [f"flatness_{kind}_{loss}"]
    }


def bench_flatness(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    attempts: int = 1,
    epsilon: float | None = None,
    batch_size: int = 500,
    lanczos_steps: int = 10,
) -> dict[str, float]:
    """Seconds for each measure on (x, y), the model in eval mode:

    ``flatness/{average,worst}/{clean,robust}`` (``attempts`` attempts each, reference
    included; weight and input attacks as in conf/evaluation/paper.yaml, at ``epsilon`` when
    given), ``hessian/top_eigenvalue`` (Lanczos with ``lanczos_steps`` products, k = 1) and
    ``hessian/vector_product`` (one Hessian-vector product over the whole set).
    """
    model.eval()
    device = x.device
    seconds: dict[str, float] = {}
    for (kind, loss), metric in paper_flatness_metrics(epsilon).items():
        measure = functools.partial(
            flatness, model, x, y, kind=kind, loss=loss, attempts=attempts,
            weight_attack=metric.weight_attack, attack=metric.attack,
            reference_attack=metric.reference_attack, batch_size=batch_size,
        )  # fmt: skip
        seconds[f"flatness/{kind}/{loss}"] = timed(measure, device)
    batches = list(Split(x, y).batches(batch_size))
    # tolerance 0: every one of the lanczos_steps products is spent, so the per-product time
    # below is the total over lanczos_steps.
    spectrum = functools.partial(
        hessian_spectrum, model, batches, k=1, lanczos_steps=lanczos_steps, tolerance=0.0,
        probes=0,
    )  # fmt: skip
    total = timed(spectrum, device)
    seconds["hessian/top_eigenvalue"] = total
    seconds["hessian/vector_product"] = total / lanczos_steps
    return seconds
