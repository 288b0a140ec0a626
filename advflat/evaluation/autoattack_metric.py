"""Robust error under AutoAttack (the paper's protocol: standard, L∞ ε = 8/255, first 1000 test
images), overall and after each component."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from advflat.attacks.autoattack import AutoAttack
from advflat.data.base import ImageData, select
from advflat.evaluation.metric import Metric


class AutoAttackRobustness(Metric):
    """``{split}/robust_error/autoattack`` and ``{split}/robust_error/autoattack/<component>``.

    A component's key holds the cumulative robust error after running the components up to and
    including it (apgd-ce, apgd-t, fab-t, square for the standard version), so the last one
    equals the overall error. AutoAttack batches the examples itself (``batch_size``) and shows
    a progress bar per component. Inside a run (``output_dir`` set by the evaluation) progress is
    kept in ``autoattack_state.pt`` there unless the attack names its own ``state_file``, so a
    preempted evaluation continues where it stopped. ``advflat-eval`` never uses a
    ``state_file`` read back from a stored config: the evaluation's folder in the run keeps it.
    ``first`` has no default: the paper's first 1000 test images are set in
    conf/evaluation/paper.yaml.
    """

    output_dir: str | None = None

    def __init__(
        self,
        *,
        attack: AutoAttack,
        split: str = "test",
        first: int | None,
        batch_size: int = 500,
    ) -> None:
        if not isinstance(attack, AutoAttack):
            raise ValueError(f"attack must be an AutoAttack, got {type(attack).__name__}")
        self.attack = attack
        self.own_state_file = attack.state_file  # the user's choice wins over output_dir
        self.on_examples(split, first, batch_size)

    def __call__(
        self, model: nn.Module, data: ImageData, results: dict[str, float]
    ) -> dict[str, float]:
        examples = select(data, self.split, self.first)
        # Chosen per call: one evaluation may be pointed at several folders (advflat-eval
        # evaluates every snapshot with the same objects), each keeping its own progress.
        self.attack.state_file = self.own_state_file
        if self.own_state_file is None and self.output_dir is not None:
            self.attack.state_file = str(Path(self.output_dir) / "autoattack_state.pt")
        result = self.attack.run(model, examples.x, examples.y, batch_size=self.batch_size)
        key = f"{self.split}/robust_error/autoattack"
        errors = result.errors()
        metrics = {key: result.robust_error}
        metrics.update({f"{key}/{name}": errors[name] for name in self.attack.names})
        return metrics
