"""A bad option stops the run before training with one line naming its config key."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from advflat.core import checks
from advflat.core.config import build
from advflat.core.errors import ConfigError
from advflat.data import HDF5
from advflat.evaluation import CleanPerformance, Evaluation
from advflat.runs.pipeline import run_experiment
from advflat.training.schedules import MultiStep
from tests.conftest import CONF, TinyNet


def composed(*overrides: str, experiment: str | None = "quickstart") -> DictConfig:
    chosen = [] if experiment is None else [f"experiment={experiment}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[*chosen, *overrides])


def build_error(cfg: DictConfig, group: str) -> str:
    runtime = {}
    if group == "trainer":
        runtime = {
            "attack": build(cfg.attack, "attack"),
            "weight_attack": build(cfg.weight_attack, "weight_attack"),
        }
    with pytest.raises(ConfigError) as error:
        build(cfg[group], group, **runtime)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_hdf5_without_root_names_the_key():
    message = build_error(composed("dataset=hdf5"), "dataset")
    assert message.startswith("dataset.root is required"), message
    assert "dataset.root=..." in message


@pytest.mark.parametrize(
    ("override", "group", "expected"),
    [
        ("trainer.epochs=abc", "trainer", "trainer.epochs must be an integer, got 'abc'"),
        ("trainer.epochs=2.5", "trainer", "trainer.epochs must be an integer, got 2.5"),
        ("trainer.batch_size=true", "trainer", "trainer.batch_size must be an integer, got True"),
        ("attack.epsilon=abc", "attack", "attack.epsilon must be a number, got 'abc'"),
        ("attack.steps=seven", "attack", "attack.steps must be an integer, got 'seven'"),
        ("attack.momentum=x", "attack", "attack.momentum must be a number, got 'x'"),
    ],
)
def test_a_value_of_the_wrong_type_is_named_not_compared(override, group, expected):
    assert build_error(composed(override), group) == expected


def test_milestones_beyond_the_last_epoch_are_warned_about_once(caplog):
    cfg = composed("trainer.epochs=10", experiment=None)  # the paper's 60/90/120 of 150
    with caplog.at_level("WARNING", logger="advflat.training.schedules"):
        trainer = build_trainer(cfg)
    warnings = [r.getMessage() for r in caplog.records if "milestones" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("trainer.scheduler.milestones [60, 90, 120]: [60, 90, 120]")
    assert "trainer.epochs (10) never take effect" in warnings[0]
    assert trainer.epochs == 10


def build_trainer(cfg: DictConfig):
    attack = build(cfg.attack, "attack")
    weight_attack = build(cfg.weight_attack, "weight_attack")
    return build(cfg.trainer, "trainer", attack=attack, weight_attack=weight_attack)


def test_milestones_inside_the_run_are_accepted():
    cfg = composed("trainer.epochs=10", "trainer.scheduler.milestones=[5,9]")
    assert build_trainer(cfg).epochs == 10


def test_milestones_must_be_a_list():
    with pytest.raises(ValueError, match="milestones must be a list of epochs, got 60"):
        MultiStep(milestones=60, gamma=0.1)  # type: ignore[arg-type]


def test_negative_seed_is_rejected_before_anything_is_written(tmp_path):
    cfg = composed("seed=-1", "device=cpu")
    with pytest.raises(ConfigError, match=r"^seed must be >= 0, got -1$"):
        run_experiment(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("target", "path", "a_choice"),
    [
        ("advflat.attacks.Attack", "attack", "advflat.attacks.pgd.PGD"),
        ("advflat.weights.WeightAttack", "weight_attack", "advflat.weights.random_attack."),
        ("advflat.evaluation.metric.Metric", "evaluation.metrics.x", "CleanPerformance"),
        ("advflat.training.schedules.Schedule", "trainer.scheduler", "schedules.MultiStep"),
        ("advflat.data.Dataset", "dataset", "advflat.data.digits.Digits"),
    ],
)
def test_an_abstract_target_fails_when_built_with_the_choices(target, path, a_choice):
    with pytest.raises(ConfigError) as error:
        build(OmegaConf.create({"_target_": target}), path)
    message = str(error.value)
    assert message.startswith(f"{path}: {target} is abstract; choose one of "), message
    assert a_choice in message


def test_an_abstract_target_nested_in_a_node_is_named_by_its_key():
    cfg = composed("attack._target_=advflat.attacks.Attack")
    with pytest.raises(ConfigError, match=r"^attack: advflat.attacks.Attack is abstract"):
        build(cfg.attack, "attack")
    node = OmegaConf.create(
        {
            "_target_": "advflat.evaluation.performance.RobustPerformance",
            "attack": {"_target_": "advflat.attacks.Attack"},
        }
    )
    with pytest.raises(ConfigError, match=r"^evaluation.metrics.pgd.attack: advflat.attacks"):
        build(node, "evaluation.metrics.pgd")


def test_hdf5_root_must_name_a_directory():
    with pytest.raises(ValueError, match="root must be the directory holding train_images.h5"):
        HDF5(root="")


@pytest.mark.parametrize(
    ("check", "args", "expected"),
    [
        (checks.at_least, ("epochs", "abc", 1), "epochs must be an integer, got 'abc'"),
        (checks.at_least, ("epochs", 3.0, 1), "epochs must be an integer, got 3.0"),
        (checks.at_least, ("epochs", False, 0), "epochs must be an integer, got False"),
        (checks.at_least, ("eta", "x", 1.0), "eta must be a number, got 'x'"),
        (checks.positive, ("epsilon", None), "epsilon must be a number, got None"),
        (checks.non_negative, ("final", "0"), "final must be a number, got '0'"),
        (checks.in_range, ("rho", [0.5], 0.0, 1.0), "rho must be a number, got [0.5]"),
    ],
)
def test_check_helpers_check_the_type_first(check, args, expected):
    with pytest.raises(ValueError) as error:
        check(*args)
    assert str(error.value) == expected


def test_check_helpers_accept_numpy_scalars_and_float_minimums():
    assert checks.at_least("steps", np.int64(3), 1) == 3
    assert checks.at_least("eta", 2, 1.0) == 2
    assert checks.positive("epsilon", np.float32(0.5)) == np.float32(0.5)


def test_a_metric_node_without_a_target_is_named_when_the_evaluation_is_built():
    # study/mini sets keys of metrics that evaluation=quick does not have.
    cfg = composed("+family=mini/at", "evaluation=quick", experiment="study/mini")
    message = build_error(cfg, "evaluation")
    assert message.startswith("evaluation.metrics.autoattack is not a metric (no _target_;")
    assert "evaluation.metrics.autoattack=null" in message


@pytest.mark.parametrize(
    ("override", "group", "expected"),
    [
        ("attack.epsilon=inf", "attack", "attack.epsilon must be a finite number, got inf"),
        ("attack.epsilon=nan", "attack", "attack.epsilon must be a finite number, got nan"),
        ("attack.step_size=inf", "attack", "attack.step_size must be a finite number, got inf"),
        (
            "trainer.optimizer.lr=inf",
            "trainer",
            "trainer.optimizer.lr must be a finite number, got inf",
        ),
    ],
)
def test_a_non_finite_number_is_rejected_in_one_line(override, group, expected):
    assert build_error(composed(override), group) == expected


@pytest.mark.parametrize("key", ["step_size", "epsilon"])
def test_a_non_finite_evaluation_radius_or_step_is_rejected_where_it_is_used(key):
    # Every PGD of the evaluation interpolates it; the first one built names its own key.
    message = build_error(composed("evaluation=quick", f"evaluation.{key}=inf"), "evaluation")
    assert message == f"evaluation.metrics.pgd.attack.{key} must be a finite number, got inf"


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("check", [checks.positive, checks.non_negative, checks.number])
def test_check_helpers_reject_non_finite_numbers(check, value):
    with pytest.raises(ValueError, match=r"^x must be a finite number, got (inf|-inf|nan)$"):
        check("x", value)


def test_unsorted_milestones_are_rejected_not_sorted():
    cfg = composed("trainer.epochs=10", "trainer.scheduler.milestones=[9,5]")
    message = build_error(cfg, "trainer")
    assert message == "trainer.scheduler.milestones must be strictly increasing epochs, got [9, 5]"
    with pytest.raises(ValueError, match=r"strictly increasing epochs, got \[5, 5\]"):
        MultiStep(milestones=[5, 5], gamma=0.1)  # would decay by gamma² at epoch 5
    assert MultiStep(milestones=[5, 9], gamma=0.1).milestones == [5, 9]


def test_snapshot_every_beyond_the_epochs_is_warned_about_once(caplog):
    cfg = composed("trainer.epochs=2", "trainer.snapshot_every=5")
    with caplog.at_level("WARNING", logger="advflat.training.trainer"):
        build_trainer(cfg)
    warnings = [r.getMessage() for r in caplog.records if "snapshot_every" in r.getMessage()]
    assert warnings == [
        "trainer.snapshot_every (5) is larger than trainer.epochs (2), so no snapshot is written: "
        "flatness over epochs and advflat-eval --all need them"
    ]
    caplog.clear()
    with caplog.at_level("WARNING", logger="advflat.training.trainer"):
        build_trainer(composed("trainer.epochs=2", "trainer.snapshot_every=2"))  # one snapshot
    assert "snapshot_every" not in caplog.text


def test_an_evaluation_with_every_metric_switched_off_is_rejected():
    off = [f"evaluation.metrics.{name}=null" for name in ("clean", "pgd", "train_pgd", "gap")]
    message = build_error(composed("evaluation=quick", *off), "evaluation")
    assert message.startswith("evaluation.metrics: every metric is switched off"), message
    assert "drop the evaluation.metrics.clean=null override" in message
    kept = composed("evaluation=quick", *off[1:])  # the clean metric alone is fine
    metrics = build(kept.evaluation, "evaluation").metrics
    assert [name for name, metric in metrics.items() if metric is not None] == ["clean"]


def test_metrics_asking_for_more_examples_than_their_split_use_all_said_in_one_line_once(
    caplog, tiny_data
):
    evaluation = Evaluation(
        epsilon=0.1,
        step_size=0.03,
        metrics={
            "clean": CleanPerformance(split="test", first=100_000_000),
            "train_clean": CleanPerformance(split="train", first=97),
            "fits": CleanPerformance(split="train", first=96),
        },
    )
    model = TinyNet()
    with caplog.at_level("WARNING", logger="advflat.evaluation.evaluation"):
        first = evaluation(model, tiny_data)
        evaluation(model, tiny_data)
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "evaluation.metrics: more examples asked for than the split holds, so each of these "
        "uses all of its split: clean.first=100000000 (test: 48), train_clean.first=97 (train: 96)"
    ]
    everything = Evaluation(
        epsilon=0.1, step_size=0.03, metrics={"clean": CleanPerformance(first=None)}
    )(model, tiny_data)
    assert first["test/clean_error"] == everything["test/clean_error"]
