"""An evaluation = an ordered set of metrics run on the final model (the ``evaluation`` group)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from torch import nn

from advflat.core import checks
from advflat.data.base import ImageData
from advflat.evaluation.metric import Metric
from advflat.evaluation.reference import SharedReferences
from advflat.evaluation.seeds import seeded_stream
from advflat.evaluation.threat_model import recorded

log = logging.getLogger(__name__)


class Evaluation:
    """Run ``metrics`` in order on a model in eval mode; return one flat dict of floats.

    ``epsilon`` and ``step_size`` are the threat model every attack of the metrics follows
    (``advflat.evaluation.threat_model``: the config interpolates them,
    ``${evaluation.epsilon}``); they are recorded as ``evaluation/epsilon`` and
    ``evaluation/step_size``, and what each attack actually ran with as
    ``threat_model/<metric>/<role>/...``, so tables of results always say how they were measured.

    ``share_passes``: the references several metrics read (the PGD reference robust loss, the
    clean reference loss) are computed once per model and handed to each of them; false
    computes them once per metric instead, in the same random streams, so every number stays
    the same bit for bit and only the cost grows (a check of the sharing).
    """

    def __init__(
        self,
        *,
        epsilon: float,
        step_size: float,
        metrics: dict[str, Metric],
        seed: int = 0,
        share_passes: bool = True,
    ) -> None:
        self.epsilon = checks.positive("epsilon", epsilon)
        self.step_size = checks.positive("step_size", step_size)
        self.metrics = {name: _metric(name, metric) for name, metric in metrics.items()}
        if all(metric is None for metric in self.metrics.values()):
            # metrics.json would hold nothing but ε and the step size.
            raise ValueError(
                "metrics: every metric is switched off (nothing would be measured); keep one, "
                "e.g. drop the evaluation.metrics.clean=null override or choose evaluation=quick"
            )
        self.seed = seed
        self.share_passes = checks.flag("share_passes", share_passes)
        self._warned = False

    def write_files_to(self, directory: Path | str) -> Evaluation:
        """Metrics that draw (landscapes) save their data and PNGs under ``directory``."""
        for metric in self.metrics.values():
            if metric is not None and hasattr(metric, "output_dir"):
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
        self._warn_beyond_splits(data)
        results = {"evaluation/epsilon": self.epsilon, "evaluation/step_size": self.step_size}
        costs: dict[str, float] = {}
        for name, metric in self.metrics.items():
            if metric is None:  # a metric switched off with `evaluation.metrics.NAME=null`
                continue
            metric.shared = shared if self.share_passes else SharedReferences(self.seed)
            start = time.perf_counter()
            with seeded_stream(self.seed, f"metric/{name}", device):
                results.update(metric(model, data, results))
            costs[f"cost/{name}"] = time.perf_counter() - start  # the floats read back: synced
            log.info("metric %s done in %.1f s", name, costs[f"cost/{name}"])
            results.update(recorded(name, metric.input_attacks()))
        return {**results, **costs, "cost/evaluation": sum(costs.values())}

    def _warn_beyond_splits(self, data: ImageData) -> None:
        """Metrics that ask for more examples than their split holds use them all: said in one
        line, once (not an error: the split's size is only known here, after training)."""
        if self._warned:
            return
        self._warned = True
        beyond = [
            entry
            for name, metric in self.metrics.items()
            if metric is not None
            for entry in _beyond_split(name, metric, data)
        ]
        if beyond:
            log.warning(
                "evaluation.metrics: more examples asked for than the split holds, so each of "
                "these uses all of its split: %s",
                ", ".join(beyond),
            )


def _beyond_split(name: str, metric: Metric, data: ImageData) -> list[str]:
    """``NAME.first=N (split: size)`` for a ``first`` (or Hessian ``last``) over the split."""
    split = getattr(metric, "split", None)
    if split is None:  # a metric derived from others (the generalization gap)
        return []
    size = len(getattr(data, split))
    asked = {option: getattr(metric, option, None) for option in ("first", "last")}
    return [
        f"{name}.{option}={wanted} ({split}: {size})"
        for option, wanted in asked.items()
        if wanted is not None and wanted > size
    ]


def _metric(name: str, metric: Any) -> Metric | None:
    """A metric, or None (switched off); a node that built nothing usually sets keys of a
    metric that the chosen evaluation option does not have (e.g. an experiment's
    ``autoattack: {first: 200}`` over ``evaluation=quick``)."""
    if metric is None or isinstance(metric, Metric):
        return metric
    keys = sorted(metric) if isinstance(metric, dict) else type(metric).__name__
    raise ValueError(
        f"metrics.{name} is not a metric (no _target_; got {keys}): the chosen evaluation "
        f"option has no metric {name!r}, so only set its keys with an option that does, or "
        f"switch it off with evaluation.metrics.{name}=null"
    )
