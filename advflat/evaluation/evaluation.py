"""An evaluation = an ordered set of metrics run on the final model (the ``evaluation`` group)."""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

from advflat import checks
from advflat.data.base import ImageData
from advflat.evaluation.metric import Metric

log = logging.getLogger(__name__)


class Evaluation:
    """Run ``metrics`` in order on a model in eval mode; return one flat dict of floats.

    ``epsilon`` is the evaluation's threat model: robust metrics interpolate it
    (``${evaluation.epsilon}``) and it is recorded as ``evaluation/epsilon`` so that tables of
    results always say at which ε they were measured.
    """

    def __init__(self, *, epsilon: float, metrics: dict[str, Metric], seed: int = 0) -> None:
        self.epsilon = checks.positive("epsilon", epsilon)
        self.metrics = metrics
        self.seed = seed

    def __call__(self, model: nn.Module, data: ImageData) -> dict[str, float]:
        model.eval()
        torch.manual_seed(self.seed)  # random starts do not depend on what ran before
        results: dict[str, float] = {"evaluation/epsilon": self.epsilon}
        for name, metric in self.metrics.items():
            if metric is None:  # a metric switched off with `evaluation.metrics.NAME=null`
                continue
            start = time.perf_counter()
            results.update(metric(model, data, results))
            log.info("metric %s done in %.1f s", name, time.perf_counter() - start)
        return results
