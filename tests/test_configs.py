"""Every option file of every group composes, binds against its target's signature, and builds."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from advflat.config import build
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


@pytest.mark.parametrize("option", options("attack") + options("weight_attack"))
def test_attack_options_build(option):
    for group in ("attack", "weight_attack"):
        if option in options(group):
            cfg = compose_with(f"{group}={option}")
            build(cfg[group], group)


@pytest.mark.parametrize("option", [o for o in options("trainer") if "/" not in o])
def test_trainer_options_build(option):
    cfg = compose_with(f"trainer={option}")
    attack = build(cfg.attack, "attack")
    build(
        cfg.trainer,
        "trainer",
        attack=attack,
        weight_attack=build(cfg.weight_attack, "weight_attack"),
    )


@pytest.mark.parametrize("option", options("evaluation"))
def test_evaluation_options_build(option):
    build(compose_with(f"evaluation={option}").evaluation, "evaluation")


@pytest.mark.parametrize("option", options("model"))
def test_model_options_build_for_cifar_shapes(option):
    cfg = compose_with(f"model={option}")
    runtime = {"num_classes": 10, "input_shape": [3, 32, 32], "mean": [0.5] * 3, "std": [0.25] * 3}
    build(cfg.model, "model", **runtime)


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), f"conf/{group}/ is empty"
    assert Path(CONF / "config.yaml").exists()
