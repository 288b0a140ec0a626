"""Collapse detection: exact thresholds, when it is checked, and that a collapsed run says so."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

from advflat.evaluation.summary import summary_table
from advflat.training.collapse import CollapseDetector, is_collapsed
from advflat.training.run_directory import RunDirectory
from tests.setups import trainer

LN10 = math.log(10)  # 2.302585...


@pytest.mark.parametrize(
    ("loss", "error", "collapsed"),
    [
        (LN10, None, True),  # uniform predictions
        (LN10 * 1.029, None, True),  # within 3 % of ln K
        (LN10 * 0.971, None, True),
        (LN10 * 1.031, None, False),
        (LN10 * 0.969, None, False),
        (None, 0.885, True),  # real MNIST's collapse: one class predicted
        (None, 0.88, True),  # 1 − 1/10 − 0.02
        (None, 0.879, False),
        (0.5, 0.1, False),
        (None, None, False),
    ],
)
def test_collapse_thresholds_for_ten_classes(loss, error, collapsed):
    assert is_collapsed(loss, error, 10) is collapsed


def test_two_classes_use_their_own_chance_levels():
    assert is_collapsed(math.log(2), None, 2)
    assert is_collapsed(None, 0.48, 2)  # 1 − 1/2 − 0.02
    assert not is_collapsed(0.5, 0.47, 2)


def test_the_detector_reads_the_robust_loss_first_and_waits_for_epoch_three():
    detector = CollapseDetector()
    stats = {"train/robust_loss": LN10, "train/clean_loss": 0.1, "test/clean_error": 0.1}
    assert not detector.check(2, 150, stats, 10)  # too early to judge
    assert detector.check(3, 150, stats, 10)
    assert detector.diagnostics() == {"diagnostics/collapsed": 1.0}
    assert not detector.check(4, 150, {"train/clean_loss": 0.2, "test/clean_error": 0.1}, 10)
    assert detector.diagnostics() == {"diagnostics/collapsed": 0.0}
    assert CollapseDetector().check(1, 1, stats, 10)  # a one-epoch run is judged at its end


class Constant(nn.Module):
    """Predicts the same logits for every input: the collapsed model itself."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(len(x), 3)


def test_a_collapsed_run_warns_and_records_the_diagnostic(tmp_path, tiny_data, caplog):
    from functools import partial

    method = trainer(epochs=1, optimizer=partial(torch.optim.SGD, lr=1e-9), snapshot_every=1)
    run = RunDirectory(tmp_path, seed=0)
    with caplog.at_level(logging.WARNING):
        try:
            method.fit(Constant(), tiny_data, run)
        finally:
            run.close()
    assert "COLLAPSED" in caplog.text
    assert method.diagnostics() == {"diagnostics/collapsed": 1.0}
    assert "training COLLAPSED" in summary_table({"test/clean_error": 0.6, **method.diagnostics()})
    assert "COLLAPSED" not in summary_table({"diagnostics/collapsed": 0.0})
