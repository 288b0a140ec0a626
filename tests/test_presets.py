"""Every conf/experiment/paper preset composes, binds against its targets' signatures, and trains
one epoch (two steps) on digits-sized stand-in data with a tiny model."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from hydra.utils import get_object
from omegaconf import OmegaConf

from advflat.core.config import build
from advflat.core.errors import ConfigError
from advflat.data.base import ImageData
from advflat.runs.pipeline import model_runtime
from advflat.training.run_directory import RunDirectory
from advflat.weights import SAMPLERS
from tests.conftest import CONF, blobs
from tests.test_configs import RUNTIME, SPECIAL, accepted, compose_with, target_nodes

PRESETS = sorted(p.stem for p in (CONF / "experiment" / "paper").glob("*.yaml"))
# The paper's model families that must each have a preset.
FAMILIES = {
    "at", "pgd14", "eps9", "label_smoothing", "label_noise", "weight_decay", "cyclic",
    "autoaugment", "trades", "mart", "awp", "entropy_sgd", "extra_data", "self_supervised",
    "weight_clipping", "ema", "early_stopping",
}  # fmt: skip


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose("config", overrides=list(overrides))
    OmegaConf.resolve(cfg)
    return cfg


def test_every_model_family_of_the_paper_has_a_preset():
    assert set(PRESETS) >= FAMILIES, sorted(FAMILIES - set(PRESETS))


EPS8, EPS9 = 8 / 255, 9 / 255
DROPPED = object()  # a key that is absent (or null) in the composed config
AT_LOSS = "advflat.training.losses.AdversarialLoss"
SGD_STEP = "advflat.training.updates.OptimizerStep"
# The paper's AT baseline (Stutz et al. 2021): what every preset keeps unless it changes it.
BASELINE = {
    "trainer.optimizer._target_": "torch.optim.SGD",
    "trainer.optimizer.lr": 0.05,
    "trainer.optimizer.nesterov": True,
    "trainer.optimizer.momentum": 0.9,
    "trainer.optimizer.weight_decay": 5e-4,
    "trainer.batch_size": 128,
    "trainer.epochs": 150,
    "trainer.scheduler._target_": "advflat.training.schedules.MultiStep",
    "trainer.scheduler.milestones": [60, 90, 120],
    "trainer.scheduler.gamma": 0.1,
    "trainer.label_smoothing": 0.0,
    "trainer.label_noise": 0.0,
    "trainer.label_noise_per_example": False,  # redrawn for every batch, as the paper
    "trainer.ema_decay": None,
    "trainer.weight_clipping": None,
    "trainer.epsilon_warmup_epochs": 0,
    "trainer.snapshot_every": 5,
    "trainer.early_stopping._target_": DROPPED,  # none
    "trainer.loss._target_": AT_LOSS,
    "trainer.loss.fraction": 1.0,
    "trainer.loss.prevent_label_leaking": False,
    "trainer.loss.ignore_incorrect": False,
    "trainer.loss.friendly_tau": None,
    "trainer.update._target_": SGD_STEP,
    "weight_attack._target_": "advflat.weights.NoWeightAttack",
    "attack._target_": "advflat.attacks.PGD",
    "attack.norm": "linf",
    "attack.steps": 7,
    "attack.step_size": 0.007,
    "attack.epsilon": EPS8,
    "evaluation.epsilon": EPS8,
    "dataset._target_": "advflat.data.CIFAR10",
    "dataset.augmentation._target_": "advflat.data.CropFlip",
}
ENTROPY = "advflat.training.updates.EntropySGD"
AWP_RULE = {"trainer.update._target_": "advflat.training.updates.AWP"}
AT_KEYS = ["fraction", "prevent_label_leaking", "ignore_incorrect", "friendly_tau"]
# Each preset's own change of the baseline (the paper's value).
CHANGES: dict[str, dict] = {
    "table1": {"attack.steps": 10},  # the article's PGD-10 (it also sweeps three models)
    "at": {},
    "adam": {
        "trainer.optimizer._target_": "torch.optim.Adam",
        "trainer.optimizer.lr": 0.1,
        "trainer.optimizer.nesterov": DROPPED,
        "trainer.optimizer.momentum": DROPPED,
    },
    "autoaugment": {"dataset.augmentation._target_": "advflat.data.AutoAugmentCutout"},
    "awp": {
        **AWP_RULE,
        "trainer.update.gradient_clipping": 0.05,
        "trainer.update.population": 1,
        "trainer.update.curriculum": None,
        "weight_attack._target_": "advflat.weights.AdversarialWeightAttack",
        "weight_attack.xi": 0.005,
        "weight_attack.steps": 1,
        "weight_attack.lr": 0.005,
        "weight_attack.include_biases": False,
    },
    "rwp": {
        **AWP_RULE,
        "trainer.update.gradient_clipping": 0.05,
        "weight_attack._target_": "advflat.weights.RandomWeightAttack",
        "weight_attack.xi": 0.01,
        "weight_attack.sampler": "sphere",
    },
    "cyclic": {
        "trainer.scheduler._target_": "advflat.training.schedules.Cyclic",
        "trainer.scheduler.milestones": DROPPED,
        "trainer.scheduler.gamma": DROPPED,
        "trainer.scheduler.peak_lr": 0.2,
        "trainer.scheduler.cycle_epochs": 30,
        "trainer.epochs": 30,
    },
    "early_stopping": {
        "trainer.early_stopping._target_": "advflat.training.EarlyStopping",
        "trainer.early_stopping.last": 500,
        "trainer.early_stopping.attack.steps": 7,
        "trainer.early_stopping.attack.restarts": 5,
        "trainer.early_stopping.attack.epsilon": EPS8,
    },
    "ema": {"trainer.ema_decay": 0.9975},
    "eps9": {"attack.epsilon": EPS9, "evaluation.epsilon": EPS8},
    "extra_data": {
        "trainer.loss._target_": "advflat.training.losses.SemiSupervisedLoss",
        "trainer.loss.unlabelled_share": 0.7,
    },
    "fraction50": {"trainer.loss.fraction": 0.5},
    "friendly": {"trainer.loss.friendly_tau": 2},
    "ignore_incorrect": {"trainer.loss.ignore_incorrect": True},
    "label_noise": {"trainer.label_noise": 0.1},
    "label_smoothing": {"trainer.label_smoothing": 0.1},
    "late_lr": {"trainer.scheduler.milestones": [140, 145]},
    "mart": {
        "trainer.loss._target_": "advflat.training.losses.MARTLoss",
        "trainer.loss.beta": 6.0,
        **{f"trainer.loss.{k}": DROPPED for k in AT_KEYS},
    },
    "pgd14": {"attack.steps": 14},
    "prevent_label_leaking": {"trainer.loss.prevent_label_leaking": True},
    "self_supervised": {
        "trainer.loss._target_": "advflat.training.losses.RotationLoss",
        "trainer.loss.rotation_weight": 0.5,
        "trainer.loss.rotated_share": 0.5,
        "trainer.loss.fraction": 0.5,
        "trainer.loss.head_hidden": 256,
        "trainer.loss.rotate_after_augmentation": False,
    },
    "trades": {
        "trainer.loss._target_": "advflat.training.losses.TRADESLoss",
        "trainer.loss.beta": 6.0,
        **{f"trainer.loss.{k}": DROPPED for k in AT_KEYS},
    },
    "weight_clipping": {"trainer.weight_clipping": 0.005},
    "weight_decay": {"trainer.optimizer.weight_decay": 0.01},
    # Entropy-SGD: L inner steps, compute-matched epochs and milestones scaled from 60/90/120.
    **{
        name: {
            "trainer.update._target_": ENTROPY,
            "trainer.update.inner_steps": inner,
            "trainer.update.inner_lr": 0.1,
            "trainer.epochs": epochs,
            "trainer.scheduler.milestones": [round(m * epochs / 150) for m in (60, 90, 120)],
        }
        for name, inner, epochs in [
            ("entropy_sgd", 1, 150),
            ("entropy_sgd_l2", 2, 75),
            ("entropy_sgd_l3", 3, 50),
            ("entropy_sgd_l5", 5, 30),
        ]
    },
}


def lookup(cfg, dotted: str):
    node = cfg
    for key in dotted.split("."):
        if node is None or key not in node:
            return DROPPED
        node = node[key]
    return OmegaConf.to_object(node) if OmegaConf.is_config(node) else node


def test_every_preset_has_its_paper_values_pinned():
    assert set(CHANGES) == set(PRESETS), sorted(set(PRESETS) ^ set(CHANGES))


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_keeps_the_papers_values_and_changes_only_its_own(preset):
    cfg = compose(f"experiment=paper/{preset}")
    expected = {**BASELINE, **CHANGES[preset]}
    for key, value in expected.items():
        got = lookup(cfg, key)
        if value is DROPPED:
            assert got is DROPPED or got is None, (key, got)
        elif isinstance(value, float):
            assert got == pytest.approx(value, rel=1e-12), (key, got)
        else:
            assert got == value, (key, got)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_is_the_papers_cifar10_resnet18_setting(preset):
    cfg = compose_with(f"experiment=paper/{preset}")
    assert cfg.dataset._target_ == "advflat.data.CIFAR10"
    assert cfg.model._target_ == "advflat.models.ResNet18"
    assert cfg.model.normalization == "rebn"
    assert cfg.name == f"paper_{preset}"
    assert (
        (CONF / "experiment" / "paper" / f"{preset}.yaml")
        .read_text()
        .startswith("# @package _global_")
    )


def tiny_pickle(path) -> str:
    """A 40-image stand-in for the 500k pseudo-labelled TinyImages file (8×8×3 uint8)."""
    images = np.random.default_rng(0).integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    with open(path, "wb") as handle:
        pickle.dump({"data": images, "extrapolated_targets": np.arange(40) % 10}, handle)
    return str(path)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_binds_and_trains_one_epoch_on_stand_in_data(tmp_path, preset):
    cfg = compose(
        f"experiment=paper/{preset}",
        "model=mlp",
        "model.hidden=[16]",
        "trainer.epochs=1",
        *(["trainer.scheduler.milestones=[]"] * (preset != "cyclic")),
        "trainer.batch_size=16",
        "trainer.test_batches=1",
        "trainer.snapshot_every=1",
        "attack.steps=2",
        *(
            ["trainer.loss.extra.path=" + tiny_pickle(tmp_path / "extra.pickle")]
            * (preset == "extra_data")
        ),
        *(["trainer.early_stopping.last=16"] * (preset == "early_stopping")),
    )
    for path, node in target_nodes(cfg):
        names, required = accepted(get_object(node["_target_"]))
        unknown = {str(k) for k in node} - SPECIAL - names
        assert not unknown, f"{path}: {node['_target_']} has no argument(s) {sorted(unknown)}"
        if not node.get("_partial_", False):
            assert not required - set(map(str, node)) - RUNTIME.get(path, set()), path

    generator = torch.Generator().manual_seed(0)
    data = ImageData(
        blobs(32, generator, shape=(3, 8, 8), classes=10),
        blobs(16, generator, shape=(3, 8, 8), classes=10),
        num_classes=10,
    )
    attack = build(cfg.attack, "attack")
    trainer = build(cfg.trainer, "trainer", attack=attack, weight_attack=build(cfg.weight_attack))
    build(cfg.evaluation, "evaluation")
    model = build(cfg.model, "model", **model_runtime(data))
    run = RunDirectory(tmp_path / "run", seed=0)
    run.model_config = {**OmegaConf.to_container(cfg.model), **model_runtime(data)}
    torch.manual_seed(0)
    try:
        final = trainer.fit(model, data, run)
    finally:
        run.close()
    assert torch.isfinite(final(data.test.x)).all()
    assert (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    history = run.history()["1"]
    assert any(key.startswith("train/") and key.endswith("_loss") for key in history)


# ---- no dead slots: every object the composed config builds is used, or the build refuses it --
LOSSES = ["normal", "adversarial", "trades", "mart", "rotation", "semi_supervised"]
UPDATES = ["sgd", "awp", "entropy_sgd"]
WEIGHT_ATTACKS = ["none", "adversarial", "random", "joint"]


def counting(calls: list, function):
    def counted(*args, **kwargs):
        calls.append(1)
        return function(*args, **kwargs)

    return counted


@pytest.mark.parametrize("weights", WEIGHT_ATTACKS)
@pytest.mark.parametrize("update", UPDATES)
@pytest.mark.parametrize("loss", LOSSES)
def test_every_built_object_is_used_or_refused_at_build_time(
    tmp_path, monkeypatch, loss, update, weights
):
    overrides = [f"trainer={loss}", f"trainer/update={update}", f"weight_attack={weights}"]
    overrides += ["weight_attack.xi=0.0123"] * (weights != "none")
    overrides += ["trainer.loss.extra.path=" + tiny_pickle(tmp_path / "x.pickle")] * (
        loss == "semi_supervised"
    )
    cfg = compose(*overrides, "model=mlp", "model.hidden=[16]", "trainer.batch_size=16")
    attack, weight_attack = build(cfg.attack, "attack"), build(cfg.weight_attack, "weight_attack")
    used = weights in ("adversarial", "random") if update == "awp" else weights == "none"
    if not used:
        with pytest.raises(ConfigError, match=r"^[^\n]*(weight_attack|trainer/update=awp)"):
            build(cfg.trainer, "trainer", attack=attack, weight_attack=weight_attack)
        return
    trainer = build(cfg.trainer, "trainer", attack=attack, weight_attack=weight_attack)
    assert type(trainer.loss) is get_object(cfg.trainer.loss._target_)
    assert type(trainer.update) is get_object(cfg.trainer["update"]._target_)
    assert trainer.attack is attack and trainer.weight_attack is weight_attack

    # One step on stand-in data: the attack, the update and the weight attack all act.
    generator = torch.Generator().manual_seed(0)
    data = ImageData(
        blobs(16, generator, shape=(3, 8, 8), classes=10),
        blobs(16, generator, shape=(3, 8, 8), classes=10),
        num_classes=10,
    )
    model = build(cfg.model, "model", **model_runtime(data))
    attacks: list = []
    training_attack = getattr(trainer.loss, "training_attack", attack)
    monkeypatch.setattr(training_attack, "perturb", counting(attacks, training_attack.perturb))
    steps: list = []
    monkeypatch.setattr(trainer.update, "step", counting(steps, trainer.update.step))
    draws: list = []
    if update == "awp":
        assert trainer.update.ascent.xi == 0.0123  # weight_attack.xi changes training
        init = trainer.update.ascent.init
        monkeypatch.setitem(SAMPLERS, init, counting(draws, SAMPLERS[init]))
    trainer.prepare(model, data, seed=0)
    trainer.train_epoch(model, data, data.train.y)
    if loss == "normal":
        trainer.test_epoch(model, data)  # normal training uses the attack for its test curves
    assert steps == [1] and attacks, (steps, attacks)
    assert bool(draws) == (update == "awp")


def test_autoattack_plus_runs_square_once_with_5000_queries_like_the_reference_plus():
    # The reference AutoAttack's "plus" raises APGD's and FAB's restarts to 5 but leaves
    # Square at its single restart; only the query budget (5000) is set.
    cfg = compose("attack=autoattack", "attack.version=plus")
    attack = build(cfg.attack, "attack")
    components = dict(attack.components)
    assert (components["apgd-ce"].restarts, components["apgd-dlr"].restarts) == (5, 5)
    assert components["fab"].restarts == 5
    assert (components["square"].queries, components["square"].restarts) == (5000, 1)
    assert (components["apgd-t"].restarts, components["fab-t"].restarts) == (1, 1)
