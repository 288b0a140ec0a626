"""advflat.evaluate: an advflat evaluation of any classifier from Python, and models.Normalized."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import advflat
from advflat.attacks.inputs import num_classes
from advflat.cli.eval_config import packaged_config
from advflat.cli.evaluate import main as advflat_eval
from advflat.data import Digits
from advflat.evaluation.snapshot_results import result_files
from advflat.models import Normalized
from advflat.runs.pipeline import run_experiment

# The quick protocol on few examples at the digits' ε: seconds on a CPU.
SMALL = ["evaluation.epsilon=0.2", "evaluation.step_size=0.05"]
SMALL += ["evaluation.metrics.pgd.first=30", "evaluation.metrics.train_pgd.first=30"]
SMALL += ["evaluation.metrics.pgd.attack.steps=3", "evaluation.metrics.train_pgd.attack.steps=3"]


class TinyCNN(nn.Module):
    """A model from elsewhere: no num_classes, no advflat base class; 8×8 grey images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture(scope="module")
def digits():
    return Digits(train_first=60, test_first=40)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TinyCNN().eval()


def without_costs(metrics):
    return {key: value for key, value in metrics.items() if not key.startswith("cost/")}


def test_the_quick_evaluation_measures_test_train_and_their_gap(model, digits):
    data = {"test": (digits.test.x, digits.test.y), "train": (digits.train.x, digits.train.y)}
    metrics = advflat.evaluate(model, data, "quick", overrides=SMALL)
    assert 0 <= metrics["test/robust_error/pgd"] <= 1 and 0 <= metrics["test/clean_error"] <= 1
    gap = metrics["test/robust_loss/pgd"] - metrics["train/robust_loss/pgd"]
    assert metrics["robust_generalization_gap/pgd"] == pytest.approx(gap)
    # The ε override drives the attacks, as recorded beside the results.
    assert metrics["evaluation/epsilon"] == 0.2
    assert metrics["threat_model/pgd/attack/epsilon"] == 0.2
    assert metrics["threat_model/train_pgd/attack/step_size"] == 0.05


def test_without_training_examples_the_train_metrics_are_left_out_in_one_warning(
    model, digits, caplog
):
    metrics = advflat.evaluate(model, (digits.test.x, digits.test.y), "quick", overrides=SMALL)
    assert "test/robust_error/pgd" in metrics
    assert not [key for key in metrics if key.startswith("train/") or "gap" in key]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("metrics are left out: train_pgd, gap" in line for line in warnings), warnings


def test_each_metric_draws_from_its_own_stream(model, digits):
    # Switching a metric off leaves the others' numbers as they were, bitwise.
    data = (digits.test.x, digits.test.y)
    both = advflat.evaluate(model, data, "quick", overrides=SMALL)
    alone = advflat.evaluate(
        model, data, "quick", overrides=[*SMALL, "evaluation.metrics.clean=null"]
    )
    assert "test/clean_error" not in alone
    assert alone["test/robust_loss/pgd"] == both["test/robust_loss/pgd"]
    other_seed = advflat.evaluate(model, data, "quick", overrides=[*SMALL, "evaluation.seed=1"])
    assert other_seed["test/robust_loss/pgd"] != both["test/robust_loss/pgd"]


def test_a_torchvision_style_dataset_counts_as_its_tensors(model, digits):
    items = [(x, int(y)) for x, y in zip(digits.test.x, digits.test.y, strict=True)]
    as_items = advflat.evaluate(model, items, "quick", overrides=SMALL)
    as_tensors = advflat.evaluate(model, (digits.test.x, digits.test.y), "quick", overrides=SMALL)
    assert without_costs(as_items) == without_costs(as_tensors)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A one-epoch digits run evaluated with the quick protocol, as `advflat` would train it."""
    run_dir = tmp_path_factory.mktemp("python_eval") / "run"
    overrides = ["experiment=quickstart", "trainer=normal", "trainer.epochs=1", "device=cpu"]
    overrides += ["trainer.scheduler.milestones=[1]", "dataset.train_first=200"]
    overrides += ["evaluation=quick", *SMALL]
    run_experiment(OmegaConf.create(packaged_config(overrides)), run_dir)
    return run_dir


def test_the_result_is_what_advflat_eval_writes_for_the_same_model(trained_run):
    final = trained_run / "checkpoints" / "final.pt"
    advflat_eval([str(final)])
    (written,) = result_files(final)
    by_cli = json.loads(written.read_text())
    model = advflat.load_model(final)
    overrides = ["dataset.train_first=200", *SMALL]
    metrics = advflat.evaluate(model, "digits", "quick", overrides=overrides)
    assert set(metrics) == set(by_cli) - {"epoch"}  # the file adds the checkpoint's epoch
    # Same config, same seeds, same data: the same numbers.
    expected = {key: value for key, value in without_costs(by_cli).items() if key != "epoch"}
    assert without_costs(metrics) == pytest.approx(expected, rel=1e-6)


# Each makes (model, data) with one thing wrong, from a good model and the digits.
def pixels_in_0_255(model, digits):
    return model, (digits.test.x * 255, digits.test.y)


def flat_images(model, digits):
    return model, (digits.test.x.flatten(1), digits.test.y)


def labels_beyond_the_logits(model, digits):
    return model, (digits.test.x, digits.test.y.clamp(min=9) + 1)


def int32_labels(model, digits):
    return model, (digits.test.x, digits.test.y.int())


def model_in_train_mode(model, digits):
    return model.train(), (digits.test.x, digits.test.y)


def three_channels_for_a_grey_model(model, digits):
    return model, (digits.test.x.repeat(1, 3, 1, 1), digits.test.y)


def dataset_of_strings(model, digits):
    return model, [("not a tensor", 0)]


def mapping_without_test(model, digits):
    return model, {"tests": (digits.test.x, digits.test.y)}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (pixels_in_0_255, "advflat.evaluate (test): x must lie in [0, 1]"),
        (flat_images, "x must be images (N, C, H, W) with N >= 1, got (40, 64)"),
        (
            labels_beyond_the_logits,
            "y must hold class indices in [0, 9] (the model has 10 classes), got values in "
            "[10, 10]",
        ),
        (int32_labels, "y must be an integer (torch.long) tensor of class indices"),
        (model_in_train_mode, "the model is in train mode (TinyCNN, conv, head); call"),
        (three_channels_for_a_grey_model, "the model fails on one test image of shape (1, 3, 8"),
        (dataset_of_strings, "item 0 must be (image tensor (C, H, W), label)"),
        (mapping_without_test, "data as a mapping needs the key 'test' and may have 'train'"),
    ],
)
def test_bad_inputs_are_one_line_errors(model, digits, make, message):
    bad_model, data = make(model, digits)
    with pytest.raises(ValueError) as raised:
        advflat.evaluate(bad_model, data, "quick", overrides=SMALL)
    assert message in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("evaluation", "overrides", "message"),
    [
        ("fast", [], "evaluation must be one of 'paper', 'quick', 'study', got 'fast'"),
        ("quick", ["trainer.epochs=3"], "'trainer.epochs=3' is not an override of evaluation.KEY"),
        ("quick", ["evaluation=paper"], "'evaluation=paper' is not an override of"),
        ("quick", "evaluation.epsilon=0.1", "overrides must be a list of strings"),
        ("quick", ["evaluation.nope=1"], "evaluation.nope"),
    ],
)
def test_bad_options_are_one_line_errors(model, digits, evaluation, overrides, message):
    with pytest.raises(ValueError) as raised:
        advflat.evaluate(model, (digits.test.x, digits.test.y), evaluation, overrides=overrides)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_normalized_standardises_each_channel_before_the_model():
    model = Normalized(nn.Flatten(), mean=[0.5, 0.25], std=[0.25, 0.5])
    x = torch.tensor([[[[1.0]], [[0.25]]], [[[0.0]], [[1.0]]]])  # (2, 2, 1, 1)
    assert torch.equal(model(x), torch.tensor([[2.0, 0.0], [-2.0, 1.5]]))
    assert list(model.parameters()) == []  # the statistics are buffers: nothing to perturb


def test_normalized_shows_the_input_checks_the_classes_of_the_model_it_wraps():
    inner = nn.Flatten()
    inner.num_classes = 4  # as every advflat model has it
    assert num_classes(Normalized(inner, mean=[0.5], std=[0.5])) == 4


def test_normalized_refuses_statistics_that_do_not_match():
    with pytest.raises(ValueError, match=r"std must have one value per input channel \(3\)"):
        Normalized(nn.Flatten(), mean=[0.5, 0.5, 0.5], std=[0.25])
    with pytest.raises(ValueError, match="std must be > 0 in every channel"):
        Normalized(nn.Flatten(), mean=[0.5], std=[0.0])
