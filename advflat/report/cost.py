"""What the study cost: seconds of training and of evaluation (``cost/*`` in the results), per
family and in total, and which metrics the evaluation time went to."""

from __future__ import annotations

from dataclasses import dataclass, field

from advflat.report.collect import Run
from advflat.report.families import family

TRAINING, EVALUATION = "cost/training", "cost/evaluation"
# A run's total over its snapshots: each snapshot's own result already counts its metrics.
SNAPSHOTS = "cost/snapshot_evaluation"
NOT_METRICS = (TRAINING, EVALUATION, SNAPSHOTS)


def evaluations(run: Run) -> list[dict[str, float]]:
    """The final evaluation and every evaluated snapshot (each has its own ``cost/*``)."""
    return [run.metrics, *run.snapshots.values()]


def evaluation_seconds(metrics: dict[str, float]) -> float:
    if EVALUATION in metrics:
        return metrics[EVALUATION]
    return sum(v for k, v in metrics.items() if k.startswith("cost/") and k not in NOT_METRICS)


@dataclass
class Cost:
    runs: int = 0
    training: float = 0.0
    evaluation: float = 0.0
    per_metric: dict[str, float] = field(default_factory=dict)

    def add(self, run: Run) -> None:
        self.runs += 1
        self.training += run.metrics.get(TRAINING, 0.0)
        for metrics in evaluations(run):
            self.evaluation += evaluation_seconds(metrics)
            for key, value in metrics.items():
                if key.startswith("cost/") and key not in NOT_METRICS:
                    name = key.removeprefix("cost/")
                    self.per_metric[name] = self.per_metric.get(name, 0.0) + value


def has_cost(runs: list[Run]) -> bool:
    return any(k.startswith("cost/") for run in runs for m in evaluations(run) for k in m)


def cost_markdown(runs: list[Run]) -> str:
    per_family: dict[str, Cost] = {}
    total = Cost()
    for run in runs:
        per_family.setdefault(family(run), Cost()).add(run)
        total.add(run)
    lines = [
        "| family | runs | training (s) | evaluation (s) | total (h) |",
        "|---|---|---|---|---|",
    ]
    for name, cost in [*sorted(per_family.items()), ("all", total)]:
        hours = (cost.training + cost.evaluation) / 3600
        lines.append(f"| {name} | {cost.runs} | {cost.training:.0f} | {cost.evaluation:.0f} | "
                     f"{hours:.3g} |")  # fmt: skip
    lines += ["", "| metric | evaluation (s) | share |", "|---|---|---|"]
    for name, seconds in sorted(total.per_metric.items(), key=lambda item: -item[1]):
        share = seconds / total.evaluation if total.evaluation else 0.0
        lines.append(f"| {name} | {seconds:.0f} | {100 * share:.0f} % |")
    return "\n".join(lines) + "\n"
