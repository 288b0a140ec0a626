"""Every option file of every group composes, binds against its target's signature, and builds
its target with the configured values."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from advflat.core.config import build
from tests.conftest import CONF

GROUPS = [
    "model",
    "attack",
    "weight_attack",
    "trainer",
    "dataset",
    "evaluation",
    "experiment",
    "cluster",
]
SPECIAL = {"_target_", "_partial_", "_args_", "_recursive_", "_convert_"}
# Arguments the pipeline passes by code (never in YAML).
RUNTIME = {
    "model": {"num_classes", "input_shape", "mean", "std"},
    "trainer": {"attack", "weight_attack"},
}


def options(group: str) -> list[str]:
    root = CONF / group
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def compose_with(override: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[override])
    OmegaConf.resolve(cfg)
    return cfg


def target_nodes(node, path: str = "") -> Iterator[tuple[str, DictConfig]]:
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key in node:
            if not OmegaConf.is_missing(node, key):  # `???`: the user must give it
                yield from target_nodes(node[key], f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            yield from target_nodes(item, f"{path}[{i}]")


def accepted(target) -> tuple[set[str], set[str]]:
    """(all keyword names accepted, required names), following **kwargs up the MRO."""
    names, required = set(), set()
    callables = (
        [c.__init__ for c in inspect.getmro(target)] if inspect.isclass(target) else [target]
    )
    for fn in callables:
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            continue
        for p in params.values():
            if p.kind in (p.VAR_POSITIONAL,) or p.name == "self":
                continue
            if p.kind is not p.VAR_KEYWORD:
                names.add(p.name)
                if p.default is p.empty:
                    required.add(p.name)
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break
    return names, required


def all_options() -> list[tuple[str, str]]:
    return [(group, option) for group in GROUPS for option in options(group) if "/" not in option]


@pytest.mark.parametrize(("group", "option"), all_options())
def test_option_composes_and_binds_against_its_target(group, option):
    cfg = compose_with(f"{group}={option}")
    for path, node in target_nodes(cfg):
        target = get_object(node["_target_"])
        names, required = accepted(target)
        keys = {str(k) for k in node} - SPECIAL
        unknown = keys - names
        assert not unknown, f"{path}: {node['_target_']} has no argument(s) {sorted(unknown)}"
        if not node.get("_partial_", False):
            missing = required - keys - RUNTIME.get(path, set())
            assert not missing, f"{path}: {node['_target_']} needs {sorted(missing)}"


# Nodes the built object keeps under another attribute name (by their path in the config).
KEPT_AS = {
    "trainer.optimizer": "make_optimizer",
    "trainer.scheduler": "schedule",
    "trainer.loss.extra": "extra_source",
}


def assert_kept(kept: object, value: object, where: str) -> None:
    """``kept`` is what the built object holds for the config ``value`` at ``where``."""
    if isinstance(value, DictConfig) and "_target_" in value:
        assert_built_from(kept, value, where)
    elif isinstance(value, DictConfig):  # a mapping of nodes, e.g. an evaluation's metrics
        assert isinstance(kept, dict) and set(kept) == set(value), where
        for name in value:
            assert_kept(kept[name], value[name], f"{where}.{name}")
    else:
        expected = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
        assert kept == expected, f"{where}: built with {kept!r}, configured {expected!r}"


def assert_built_from(built: object, node: DictConfig, path: str) -> None:
    """``built`` is what the node's ``_target_`` makes (an instance, or for ``_partial_`` a
    ``functools.partial`` of it) and keeps every value of the node, nested nodes included."""
    target = get_object(node["_target_"])
    if node.get("_partial_", False):
        assert isinstance(built, functools.partial) and built.func is target, path
        values = built.keywords
    else:
        assert isinstance(built, target), f"{path}: {type(built).__name__}"
        values = vars(built)
    for key in set(node) - SPECIAL:
        where = f"{path}.{key}"
        assert_kept(values[KEPT_AS.get(where, str(key))], node[key], where)


def attack_options() -> list[tuple[str, str]]:
    return [(group, option) for group in ("attack", "weight_attack") for option in options(group)]


@pytest.mark.parametrize(("group", "option"), attack_options())
def test_attack_options_build_their_target_with_the_configured_values(group, option):
    cfg = compose_with(f"{group}={option}")
    assert_built_from(build(cfg[group], group), cfg[group], group)


@pytest.mark.parametrize("option", [o for o in options("trainer") if "/" not in o])
def test_trainer_options_build_their_target_with_the_configured_values(option):
    cfg = compose_with(f"trainer={option}")
    trainer = build(
        cfg.trainer,
        "trainer",
        attack=build(cfg.attack, "attack"),
        weight_attack=build(cfg.weight_attack, "weight_attack"),
    )
    assert_built_from(trainer, cfg.trainer, "trainer")


@pytest.mark.parametrize("option", options("evaluation"))
def test_evaluation_options_build_every_metric_with_the_configured_values(option):
    cfg = compose_with(f"evaluation={option}")
    assert_built_from(build(cfg.evaluation, "evaluation"), cfg.evaluation, "evaluation")


@pytest.mark.parametrize("option", options("model"))
def test_model_options_list_every_constructor_argument_and_build_for_cifar_shapes(option):
    # The dataset's arguments come at run time; every other argument is spelled out in the file.
    node = compose_with(f"model={option}").model
    target = get_object(node["_target_"])
    assert set(node) - SPECIAL == set(inspect.signature(target).parameters) - RUNTIME["model"]
    runtime = {"num_classes": 10, "input_shape": [3, 32, 32], "mean": [0.5] * 3, "std": [0.25] * 3}
    model = build(node, "model", **runtime)
    assert isinstance(model, target)
    assert model.num_classes == 10 and model.input_shape == (3, 32, 32)


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), f"conf/{group}/ is empty"
    assert Path(CONF / "config.yaml").exists()
