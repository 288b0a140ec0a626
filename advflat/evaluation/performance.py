"""Clean and robust loss/error — the basic metrics of every evaluation (SPEC §3, §5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from advflat.attacks.base import Attack
from advflat.data.base import ImageData, Split, select
from advflat.evaluation.metric import Metric
from advflat.performance import batch_performance
from advflat.statistics import RunningMeans


def robust_loss_and_error(
    model: nn.Module, examples: Split, attack: Attack, batch_size: int, desc: str = "attack"
) -> tuple[float, float]:
    """Mean CE and error at the attack's adversarial examples (per example worst case)."""
    means = RunningMeans()
    total = examples.num_batches(batch_size)
    for x, y in tqdm(
        examples.batches(batch_size), total=total, desc=desc, leave=False, disable=None
    ):
        with torch.no_grad():
            logits = model(attack(model, x, y))  # (B, K)
            means.add(
                {
                    "loss": F.cross_entropy(logits, y),
                    "error": (logits.argmax(1) != y).float().mean(),
                },
                len(y),
            )
    result = means.means()
    return result["loss"], result["error"]


class CleanPerformance(Metric):
    """``{split}/clean_loss`` and ``{split}/clean_error`` on the first N examples of a split."""

    def __init__(
        self, *, split: str = "test", first: int | None = None, batch_size: int = 500
    ) -> None:
        self.on_examples(split, first, batch_size)

    def __call__(
        self, model: nn.Module, data: ImageData, results: dict[str, float]
    ) -> dict[str, float]:
        means = RunningMeans()
        for x, y in select(data, self.split, self.first).batches(self.batch_size):
            means.add(batch_performance(model, x, y, None), len(y))
        return {f"{self.split}/{key}": value for key, value in means.means().items()}


class RobustPerformance(Metric):
    """``{split}/robust_loss/{name}`` and ``{split}/robust_error/{name}`` under an attack."""

    def __init__(
        self,
        *,
        attack: Attack,
        name: str = "pgd",
        split: str = "test",
        first: int | None = 1000,
        batch_size: int = 500,
    ) -> None:
        self.attack, self.name = attack, name
        self.on_examples(split, first, batch_size)

    def __call__(
        self, model: nn.Module, data: ImageData, results: dict[str, float]
    ) -> dict[str, float]:
        examples = select(data, self.split, self.first)
        desc = f"{self.name} on {self.split}"
        loss, error = robust_loss_and_error(model, examples, self.attack, self.batch_size, desc)
        return {
            f"{self.split}/robust_loss/{self.name}": loss,
            f"{self.split}/robust_error/{self.name}": error,
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
