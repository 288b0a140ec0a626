"""experiment=paper/table1 composes into the article's Table 1: three CIFAR-10 architectures,
PGD-10 adversarial training at ε 8/255 for 150 epochs, and clean, PGD-10 and AutoAttack errors
on the first 1000 test images (composing only, no training)."""

from __future__ import annotations

import pytest
from omegaconf import DictConfig

from advflat.core.config import build
from advflat.evaluation import Evaluation
from tests.test_sweeps import compose_job, compose_sweep, sweep_jobs

PRESET = "experiment=paper/table1"
EPS8 = 8 / 255
# The table's rows, in its order: (model option, target, architecture keys).
ROWS = [
    ("wrn28_10", "advflat.models.WideResNet", {"depth": 28, "width": 10}),
    ("simplenet", "advflat.models.SimpleNet", {}),
    ("resnet18", "advflat.models.ResNet18", {}),
]


@pytest.fixture(scope="module")
def sweep() -> DictConfig:
    """The preset as ``advflat -m`` composes it, Hydra's config included."""
    return compose_sweep(PRESET)


@pytest.fixture(scope="module")
def jobs(sweep) -> list[DictConfig]:
    """The composed config of every job the preset's sweep launches."""
    return [compose_job(*job) for job in sweep_jobs(sweep, [PRESET])]


def test_table1_sweeps_exactly_the_articles_three_models(jobs):
    assert len(jobs) == len(ROWS)
    for cfg, (_, target, keys) in zip(jobs, ROWS, strict=True):
        assert cfg.model._target_ == target
        assert {key: cfg.model[key] for key in keys} == keys


def test_table1_jobs_are_named_after_their_model_in_one_sweep_folder(sweep):
    assert sweep.name == "paper_table1"
    assert sweep.hydra.sweep.dir == "outputs/sweeps/paper_table1"
    models = [dict(o.split("=", 1) for o in job)["model"] for job in sweep_jobs(sweep, [PRESET])]
    assert models == [option for option, _, _ in ROWS]


def test_table1_trains_with_pgd10_at_eps_8_255_for_150_epochs_on_cifar10(jobs):
    for cfg in jobs:
        assert cfg.dataset._target_ == "advflat.data.CIFAR10"
        assert cfg.attack._target_ == "advflat.attacks.PGD"
        assert (cfg.attack.steps, cfg.attack.restarts, cfg.attack.norm) == (10, 1, "linf")
        assert cfg.attack.epsilon == pytest.approx(EPS8, rel=1e-12)
        assert cfg.attack.step_size == pytest.approx(0.007, rel=1e-12)
        assert cfg.trainer.epochs == 150
        assert cfg.trainer.loss._target_ == "advflat.training.losses.AdversarialLoss"
        assert cfg.trainer.loss.fraction == 1.0


def test_table1_evaluates_clean_pgd10_and_autoattack_on_the_first_1000_test_images(jobs):
    for cfg in jobs:
        evaluation = cfg.evaluation
        assert evaluation.epsilon == pytest.approx(EPS8, rel=1e-12)
        metrics = {name: node for name, node in evaluation.metrics.items() if node is not None}
        assert set(metrics) == {"clean", "pgd", "autoattack"}
        assert all((node.split, node.first) == ("test", 1000) for node in metrics.values())
        pgd = metrics["pgd"].attack
        assert (pgd.steps, pgd.restarts) == (10, 1)
        assert pgd.epsilon == pytest.approx(EPS8, rel=1e-12)
        autoattack = metrics["autoattack"].attack
        assert autoattack._target_ == "advflat.attacks.AutoAttack"
        assert autoattack.version == "standard"
        assert autoattack.epsilon == pytest.approx(EPS8, rel=1e-12)


def test_table1_evaluation_builds(jobs):
    evaluation = build(jobs[0].evaluation, "evaluation")
    assert isinstance(evaluation, Evaluation)
    assert [name for name, metric in evaluation.metrics.items() if metric is not None] == [
        "pgd",
        "clean",
        "autoattack",
    ]
