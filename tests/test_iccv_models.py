"""experiment=study/iccv is the original's 29 correlation-plot models: each job, composed as the
sweep composes it, trains the setting its original name encodes. The table below is the known
answer, written from the original's naming (PGD-7 AT at ε 8/255 unless the name says
otherwise), not read from the YAML."""

from __future__ import annotations

import dataclasses
import math

import pytest
from omegaconf import DictConfig

from tests.conftest import CONF
from tests.test_studies import families, job

EPS8, EPS9 = 8 / 255, 9 / 255
AT = "linf_gd_normalized_lr0007_mom0_i7_e00314_f100"


@dataclasses.dataclass(frozen=True)
class Model:
    """One row: the family file and the settings of the paper's PGD-7 AT baseline it changes."""

    family: str
    weight_decay: float = 5e-4
    weight_clipping: float | None = None
    label_noise: float = 0.0
    label_smoothing: float = 0.0
    trades_beta: float | None = None
    rotation_weight: float | None = None
    rotated_share: float | None = None  # share of rotated copies in a batch
    rotation_head_hidden: int | None = None  # hidden units of the rotation head's MLP
    epsilon: float = EPS8
    steps: int = 7
    schedule: str = "multistep"  # multistep: ×0.1 at 60/90/120 of 150; cyclic: 0→0.2→0 in 30
    loss: str = "AdversarialLoss"
    fraction: float | None = 1.0  # adversarial share of a batch (f100); TRADES has none
    ignore_incorrect: bool = False
    prevent_label_leaking: bool = False


MODELS: dict[str, Model] = {
    f"at_{AT}": Model("iccv/at"),
    "at_linf_gd_normalized_lr0007_mom0_i14_e00314_f100": Model("iccv/pgd14", steps=14),
    "at_linf_gd_normalized_lr0007_mom0_i7_e00352_f100": Model("iccv/eps9", epsilon=EPS9),
    f"at_ii_{AT}": Model("iccv/ignore_incorrect", ignore_incorrect=True),
    f"at_pll_{AT}": Model("iccv/prevent_label_leaking", prevent_label_leaking=True),
    f"0005p_at_{AT}": Model("iccv/weight_clipping_0005", weight_clipping=0.005),
    **{
        f"at_{AT}_ls0{t}": Model(f"iccv/label_smoothing_0{t}", label_smoothing=t / 10)
        for t in range(1, 6)
    },
    **{f"at_{AT}_ln0{t}": Model(f"iccv/label_noise_0{t}", label_noise=t / 10) for t in range(1, 6)},
    f"at_{AT}_cyc": Model("iccv/cyclic", schedule="cyclic"),
    f"at_{AT}_wd0001": Model("iccv/weight_decay_1e-3", weight_decay=1e-3),
    f"at_{AT}_wd001": Model("iccv/weight_decay_1e-2", weight_decay=1e-2),
    f"at_{AT}_wd005": Model("iccv/weight_decay_5e-2", weight_decay=5e-2),
    **{
        f"at_ssl{name}_{AT}": Model(
            f"iccv/self_supervised_{name}",
            rotation_weight=weight,
            rotated_share=0.5,
            rotation_head_hidden=256,
            loss="RotationLoss",
            fraction=0.5,
        )
        for name, weight in [("05", 0.5), ("1", 1.0), ("2", 2.0), ("4", 4.0), ("8", 8.0)]
    },
    **{
        f"trades{beta}_{AT}": Model(
            f"iccv/trades_{beta}", trades_beta=float(beta), loss="TRADESLoss", fraction=None
        )
        for beta in (1, 3, 6, 9)
    },
}


def test_the_table_has_29_distinct_original_names_and_families():
    assert len(MODELS) == 29
    assert len({model.family for model in MODELS.values()}) == 29


def test_iccv_study_lists_exactly_the_29_models_once_each():
    listed = families("iccv")
    assert len(listed) == len(set(listed)) == 29
    assert set(listed) == {model.family for model in MODELS.values()}


def test_every_iccv_family_file_is_one_of_the_29_models():
    files = {f"iccv/{p.stem}" for p in (CONF / "family" / "iccv").glob("*.yaml")}
    assert files == {model.family for model in MODELS.values()}


@pytest.mark.parametrize("original", sorted(MODELS))
def test_iccv_family_file_names_its_original_model_in_its_header(original):
    text = (CONF / "family" / f"{MODELS[original].family}.yaml").read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert f"The original's {original}:" in "\n".join(header)


def loss_option(cfg: DictConfig, key: str, default=None):
    return cfg.trainer["loss"].get(key, default)


@pytest.mark.parametrize("original", sorted(MODELS))
def test_iccv_model_trains_the_setting_its_original_name_encodes(original):
    model = MODELS[original]
    cfg = job("iccv", model.family)
    trainer = cfg.trainer
    # Shared by all 29: CIFAR-10, ResNet-18 (rebn), Nesterov SGD lr 0.05, batch 128, plain
    # updates (no weight perturbation), 5-epoch snapshots each evaluated after training.
    assert cfg.dataset._target_ == "advflat.data.CIFAR10"
    assert cfg.model._target_ == "advflat.models.ResNet18" and cfg.model.normalization == "rebn"
    assert trainer.optimizer._target_ == "torch.optim.SGD" and trainer.optimizer.nesterov
    assert trainer.optimizer.lr == 0.05 and trainer.optimizer.momentum == 0.9
    assert trainer.batch_size == 128
    assert trainer["update"]._target_ == "advflat.training.updates.OptimizerStep"
    assert cfg.weight_attack._target_ == "advflat.weights.NoWeightAttack"
    assert cfg.evaluate_snapshots and trainer.snapshot_every == 5
    assert cfg.attack._target_ == "advflat.attacks.PGD" and cfg.attack.norm == "linf"
    assert cfg.attack.step_size == 0.007 and math.isclose(cfg.evaluation.epsilon, EPS8)

    assert math.isclose(trainer.optimizer.weight_decay, model.weight_decay)
    assert trainer.weight_clipping == model.weight_clipping
    assert trainer.label_noise == model.label_noise
    assert trainer.label_noise_per_example is False  # ln: redrawn for every batch
    assert trainer.label_smoothing == model.label_smoothing
    assert math.isclose(cfg.attack.epsilon, model.epsilon) and cfg.attack.steps == model.steps
    assert str(trainer["loss"]._target_).rsplit(".", 1)[-1] == model.loss
    assert loss_option(cfg, "beta") == model.trades_beta
    assert loss_option(cfg, "rotation_weight") == model.rotation_weight
    assert loss_option(cfg, "rotated_share") == model.rotated_share
    assert loss_option(cfg, "head_hidden") == model.rotation_head_hidden
    assert loss_option(cfg, "ignore_incorrect", False) == model.ignore_incorrect
    assert loss_option(cfg, "prevent_label_leaking", False) == model.prevent_label_leaking
    assert loss_option(cfg, "fraction") == model.fraction
    if model.schedule == "multistep":
        assert trainer.scheduler._target_ == "advflat.training.schedules.MultiStep"
        assert list(trainer.scheduler.milestones) == [60, 90, 120]
        assert trainer.scheduler.gamma == 0.1 and trainer.epochs == 150
    else:
        assert trainer.scheduler._target_ == "advflat.training.schedules.Cyclic"
        assert trainer.scheduler.peak_lr == 0.2 and trainer.scheduler.cycle_epochs == 30
        assert trainer.epochs == 30
