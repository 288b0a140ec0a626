"""Collapse detection: exact thresholds, when it is checked, that an ordinary short run is not
flagged while a real collapse is, and that a collapsed run says so."""

from __future__ import annotations

import logging
import math
from tempfile import TemporaryDirectory

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from advflat.evaluation.summary import summary_table
from advflat.runs.pipeline import build_all
from advflat.training import Trainer
from advflat.training.collapse import CollapseDetector, is_collapsed
from advflat.training.run_directory import RunDirectory
from tests.conftest import CONF
from tests.setups import trainer

LN10 = math.log(10)  # 2.302585...


@pytest.mark.parametrize(
    ("loss", "error", "collapsed"),
    [
        (None, 0.885, True),  # real MNIST's collapse: one class predicted
        (None, 0.88, True),  # 1 − 1/10 − 0.02
        (None, 0.879, False),
        (LN10, 0.45, False),  # a clean error decides: the loss near ln K says nothing then
        (0.5, 0.9, True),
        (LN10, None, True),  # without a clean error: uniform predictions
        (LN10 * 1.029, None, True),  # within 3 % of ln K
        (LN10 * 0.971, None, True),
        (LN10 * 1.031, None, False),
        (LN10 * 0.969, None, False),
        (None, None, False),
    ],
)
def test_collapse_thresholds_for_ten_classes(loss, error, collapsed):
    assert is_collapsed(loss, error, 10) is collapsed


def test_two_classes_use_their_own_chance_levels():
    assert is_collapsed(math.log(2), None, 2)
    assert is_collapsed(None, 0.48, 2)  # 1 − 1/2 − 0.02
    assert not is_collapsed(0.5, 0.47, 2)


def test_the_detector_judges_the_clean_error_and_waits_for_epoch_three():
    detector = CollapseDetector()
    chance = {"train/robust_loss": 0.1, "train/clean_loss": 0.1, "test/clean_error": 0.9}
    assert not detector.check(2, 150, chance, 10)  # too early to judge
    assert detector.check(3, 150, chance, 10)
    assert detector.diagnostics() == {"diagnostics/collapsed": 1.0}
    learning = {"train/robust_loss": LN10, "test/clean_error": 0.45, "train/clean_error": 0.9}
    assert not detector.check(4, 150, learning, 10)  # the test error is read first
    assert detector.diagnostics() == {"diagnostics/collapsed": 0.0}
    assert CollapseDetector().check(1, 1, chance, 10)  # a one-epoch run is judged at its end


def test_without_a_clean_error_the_clean_loss_is_read_before_the_robust_one():
    stats = {"train/robust_loss": LN10, "train/clean_loss": 0.3}
    assert not CollapseDetector().check(3, 3, stats, 10)
    assert CollapseDetector().check(3, 3, {"train/robust_loss": LN10}, 10)


def quickstart_for_two_epochs(*overrides: str) -> tuple[Trainer, dict[str, float]]:
    """The digits quickstart shrunk to seconds (2 epochs, 512 training digits, PGD-2); the
    trainer after fitting and its last epoch's statistics."""
    fixed = ["experiment=quickstart", "device=cpu", "trainer.epochs=2"]
    small = ["dataset.train_first=512", "attack.steps=2", "trainer.snapshot_every=0"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*fixed, *small, *overrides])
    torch.manual_seed(cfg.seed)
    objects = build_all(cfg)
    with TemporaryDirectory() as folder:
        run = RunDirectory(folder, seed=cfg.seed)
        run.model_config = objects["model_config"]
        try:
            objects["trainer"].fit(objects["model"], objects["data"], run)
        finally:
            run.close()
        return objects["trainer"], run.history()["2"]


def test_an_ordinary_short_adversarial_run_is_not_flagged():
    method, last = quickstart_for_two_epochs()
    # Its robust loss is still near ln 10, as early in adversarial training it is...
    assert abs(last["train/robust_loss"] - LN10) < 0.05 * LN10
    assert last["test/clean_error"] < 0.6  # ...but it has learned: far from chance (0.9)
    assert method.diagnostics() == {"diagnostics/collapsed": 0.0}


def test_a_weight_decay_of_one_half_collapses_and_is_flagged():
    method, last = quickstart_for_two_epochs("trainer.optimizer.weight_decay=0.5")
    assert last["test/clean_error"] >= 0.88  # one class predicted
    assert method.diagnostics() == {"diagnostics/collapsed": 1.0}


class Constant(nn.Module):
    """Predicts class ``favourite`` for every input (the same logits): the collapsed model."""

    def __init__(self, favourite: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.nn.functional.one_hot(torch.tensor(favourite), 3).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(len(x), 3)


def test_a_collapsed_run_warns_and_records_the_diagnostic(tmp_path, tiny_data, caplog):
    from functools import partial

    # The rarest test class: its clean error, 1 − its share, is at least 2/3 (chance).
    rarest = int(torch.bincount(tiny_data.test.y, minlength=3).argmin())
    method = trainer(epochs=1, optimizer=partial(torch.optim.SGD, lr=1e-9), snapshot_every=1)
    run = RunDirectory(tmp_path, seed=0)
    with caplog.at_level(logging.WARNING):
        try:
            method.fit(Constant(rarest), tiny_data, run)
        finally:
            run.close()
    assert "COLLAPSED" in caplog.text
    assert method.diagnostics() == {"diagnostics/collapsed": 1.0}
    assert "training COLLAPSED" in summary_table({"test/clean_error": 0.6, **method.diagnostics()})
    assert "COLLAPSED" not in summary_table({"diagnostics/collapsed": 0.0})
