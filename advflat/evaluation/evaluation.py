"""An evaluation = an ordered set of metrics run on the final model (the ``evaluation`` group)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from torch import nn

from advflat import checks
from advflat.data.base import ImageData
from advflat.evaluation.metric import Metric
from advflat.evaluation.reference import SharedReferences
from advflat.evaluation.seeds import seeded_stream

log = logging.getLogger(__name__)


class Evaluation:
    """Run ``metrics`` in order on a model in eval mode; return one flat dict of floats.

    ``epsilon`` (the threat model) and ``step_size`` (of every PGD) are interpolated by the robust
    metrics (``${evaluation.epsilon}``) and recorded as ``evaluation/epsilon`` and
    ``evaluation/step_size``, so tables of results always say how they were measured.
    """

    def __init__(
        self, *, epsilon: float, step_size: float, metrics: dict[str, Metric], seed: int = 0
    ) -> None:
        self.epsilon = checks.positive("epsilon", epsilon)
        self.step_size = checks.positive("step_size", step_size)
        self.metrics = metrics
        self.seed = seed

    def write_files_to(self, directory: Path | str) -> Evaluation:
        """Metrics that draw (landscapes) save their data and PNGs under ``directory``."""
        for metric in self.metrics.values():
            if hasattr(metric, "output_dir"):
                metric.output_dir = str(directory)
        return self

    def __call__(self, model: nn.Module, data: ImageData) -> dict[str, float]:
        """Every metric draws from its own random stream (seed derived from ``seed`` and the
        metric's name) and shares the robust references it has in common with the others;
        ``cost/<name>`` records its seconds (the shared reference is charged to the first
        metric that needs it) and ``cost/evaluation`` the total."""
        model.eval()
        device = next(model.parameters()).device
        shared = SharedReferences(self.seed)
        results = {"evaluation/epsilon": self.epsilon, "evaluation/step_size": self.step_size}
        costs: dict[str, float] = {}
        for name, metric in self.metrics.items():
            if metric is None:  # a metric switched off with `evaluation.metrics.NAME=null`
                continue
            metric.shared = shared
            start = time.perf_counter()
            with seeded_stream(self.seed, f"metric/{name}", device):
                results.update(metric(model, data, results))
            costs[f"cost/{name}"] = time.perf_counter() - start  # the floats read back: synced
            log.info("metric %s done in %.1f s", name, costs[f"cost/{name}"])
        return {**results, **costs, "cost/evaluation": sum(costs.values())}
