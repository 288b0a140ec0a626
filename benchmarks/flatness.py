"""Wall-clock cost of each flatness measure, for ``make bench``.

``bench_flatness(model, x, y)`` runs every measure once with the paper's settings (fewer attempts
by default) and returns seconds per measure; scripts/bench.py calls it for resnet18 on
synthetic 32×32×3 images, on the GPU when there is one.
"""

from __future__ import annotations

import functools

from torch import Tensor, nn

from advflat.data.base import Split
from advflat.evaluation.flatness import flatness
from advflat.evaluation.hessian import hessian_spectrum
from benchmarks.timing import timed


def bench_flatness(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    attempts: int = 1,
    epsilon: float = 8 / 255,
    batch_size: int = 500,
    lanczos_steps: int = 10,
) -> dict[str, float]:
    """Seconds for each measure on (x, y), the model in eval mode:

    ``flatness/{average,worst}/{clean,robust}`` (``attempts`` attempts each, reference
    included), ``hessian/top_eigenvalue`` (Lanczos with ``lanczos_steps`` products, k = 1) and
    ``hessian/vector_product`` (one Hessian-vector product over the whole set).
    """
    model.eval()
    device = x.device
    seconds: dict[str, float] = {}
    for kind in ("average", "worst"):
        for loss in ("clean", "robust"):
            measure = functools.partial(
                flatness, model, x, y, kind=kind, loss=loss, attempts=attempts, epsilon=epsilon,
                batch_size=batch_size,
            )  # fmt: skip
            seconds[f"flatness/{kind}/{loss}"] = timed(measure, device)
    batches = list(Split(x, y).batches(batch_size))
    total = timed(
        lambda: hessian_spectrum(model, batches, k=1, lanczos_steps=lanczos_steps), device
    )
    seconds["hessian/top_eigenvalue"] = total
    seconds["hessian/vector_product"] = total / lanczos_steps
    return seconds
