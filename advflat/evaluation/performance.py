"""Clean and robust loss/error — the basic metrics of every evaluation
(docs/flatness.md#evaluation-sets)."""

from __future__ import annotations

from torch import nn

from advflat.attacks.base import Attack
from advflat.core.classification import batch_performance
from advflat.core.statistics import RunningMeans
from advflat.data.base import ImageData, select
from advflat.evaluation.metric import Metric


class CleanPerformance(Metric):
    """``{split}/clean_loss`` and ``{split}/clean_error`` on the ``first`` N examples of a split
    (None: all; no default, the paper's 1000 test images are set in conf/evaluation/paper.yaml).
    """

    def __init__(self, *, split: str = "test", first: int | None, batch_size: int = 500) -> None:
        self.on_examples(split, first, batch_size)

    def __call__(
        self, model: nn.Module, data: ImageData, results: dict[str, float]
    ) -> dict[str, float]:
        means = RunningMeans()
        for x, y in select(data, self.split, self.first).batches(self.batch_size):
            means.add(batch_performance(model, x, y, None), len(y))
        return {f"{self.split}/{key}": value for key, value in means.means().items()}


class RobustPerformance(Metric):
    """``{split}/robust_loss/{name}`` and ``{split}/robust_error/{name}`` under an attack, on the
    ``first`` N examples of a split (no default: the paper's 1000 test and 1000 training images
    are set in conf/evaluation/paper.yaml)."""

    def __init__(
        self,
        *,
        attack: Attack,
        name: str = "pgd",
        split: str = "test",
        first: int | None,
        batch_size: int = 500,
    ) -> None:
        self.attack, self.name = attack, name
        self.on_examples(split, first, batch_size)

    def __call__(
        self, model: nn.Module, data: ImageData, results: dict[str, float]
    ) -> dict[str, float]:
        # Shared with the robust flatness references when their settings match.
        reference = self.robust_reference(model, data, self.attack)
        return {
            f"{self.split}/robust_loss/{self.name}": reference.mean_loss(),
            f"{self.split}/robust_error/{self.name}": reference.mean_error(),
        }


class RobustGeneralizationGap(Metric):
    """Test minus train robust loss (the paper's robust generalization gap) from earlier metrics."""

    def __init__(self, *, name: str = "pgd") -> None:
        self.name = name

    def __call__(
        self, model: nn.Module, data: ImageData, results: dict[str, float]
    ) -> dict[str, float]:
        test, train = f"test/robust_loss/{self.name}", f"train/robust_loss/{self.name}"
        missing = [key for key in (test, train) if key not in results]
        if missing:
            raise ValueError(
                f"robust generalization gap needs {missing} computed by an earlier metric"
            )
        return {f"robust_generalization_gap/{self.name}": results[test] - results[train]}
