"""Every conf/experiment/paper preset composes, binds against its targets' signatures, and trains
one epoch (two steps) on digits-sized stand-in data with a tiny model."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from hydra.utils import get_object
from omegaconf import OmegaConf

from advflat.config import build
from advflat.data.base import ImageData
from advflat.pipeline import model_runtime
from advflat.training.run_directory import RunDirectory
from tests.conftest import CONF, blobs
from tests.test_configs import RUNTIME, SPECIAL, accepted, compose_with, target_nodes

PRESETS = sorted(p.stem for p in (CONF / "experiment" / "paper").glob("*.yaml"))
# The paper's model families (issue 5) that must each have a preset.
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
        "trainer.batch_size=16",
        "trainer.test_batches=1",
        "trainer.snapshot_every=1",
        "attack.steps=2",
        *(
            ["trainer.extra.path=" + tiny_pickle(tmp_path / "extra.pickle")]
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
