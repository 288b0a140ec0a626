"""The option files under advflat/conf/ and the Python constructors they build agree: every value
an option file writes for a parameter that also has a Python default equals that default, unless
the difference is a deliberate one listed (with its reason) in DELIBERATE below. A default changed
on one side only would otherwise make `advflat` and code that calls the constructor directly run
different settings without anyone noticing.

Only advflat's own targets are checked: third-party defaults (torch.optim.SGD's lr 0.001, ...)
are generic, and the option files set the paper's values on purpose."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from tests.conftest import CONF

# Presets only select options and set values for one experiment; they build nothing themselves.
PRESET_GROUPS = ("experiment", "family")
PROJECT = "advflat."

# (target, parameter) -> why the option files set another value than the Python default.
DELIBERATE: dict[tuple[str, str], str] = {
    # The paper's settings against a constructor's generic default.
    ("advflat.attacks.AutoAttack", "version"): "the paper ran APGD-CE, APGD-T, FAB-T (no Square)",
    ("advflat.attacks.Square", "rescale_schedule"): (
        "AutoAttack's 5000-query Square keeps the published halvings; a standalone Square "
        "stretches them to its budget, as the reference implementation's default"
    ),
    ("advflat.weights.JointWeightInputAttack", "protocol"): "the paper's per-batch protocol",
    ("advflat.weights.JointWeightInputAttack", "batch_size"): "the paper's per-batch protocol",
    # One option or metric of several that the same constructor builds, each with its own value.
    ("advflat.models.WideResNet", "depth"): "wrn34_10 beside wrn28_10",
    ("advflat.evaluation.RobustPerformance", "split"): "train_pgd beside pgd",
    ("advflat.evaluation.AverageCaseFlatness", "loss"): "the robust loss beside the clean one",
    ("advflat.evaluation.WorstCaseFlatness", "loss"): "the robust loss beside the clean one",
    ("advflat.evaluation.HessianSpectrum", "loss"): "the robust loss beside the clean one",
    ("advflat.evaluation.LossLandscape", "loss"): "the robust loss beside the clean one",
    # Cost against memory: the same bits either way; the constructor keeps the smallest footprint.
    ("advflat.evaluation.HessianSpectrum", "probe_batch"): "20 probes share one pass (20 vectors)",
    ("advflat.evaluation.HessianSpectrum", "reuse_graph"): "all `last` examples' graphs held",
}


def option_files() -> list[Path]:
    files = sorted(CONF.rglob("*.yaml"))
    return [f for f in files if f.relative_to(CONF).parts[0] not in PRESET_GROUPS]


def selection(file: Path) -> tuple[list[str], str]:
    """The overrides that select ``file`` and the package its keys land in ('' for the root)."""
    relative = file.relative_to(CONF).with_suffix("")
    if relative.parent == Path("."):  # config.yaml, the primary config
        return [], ""
    group, option = relative.parent.as_posix(), relative.name
    is_global = file.read_text().startswith("# @package _global_")
    return [f"{group}={option}"], "" if is_global else group.replace("/", ".")


def written_values(node: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(parent path, key, value) of every literal leaf the file writes (interpolations name a
    value written elsewhere, where it is checked; the defaults list selects options)."""
    if not isinstance(node, DictConfig):
        return
    for key in map(str, node):
        if not path and key == "defaults":
            continue
        if OmegaConf.is_interpolation(node, key) or OmegaConf.is_missing(node, key):
            continue
        value = node[key]
        if isinstance(value, DictConfig):
            yield from written_values(value, f"{path}.{key}" if path else key)
        else:
            plain = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
            yield path, key, plain


def python_defaults(target: Callable) -> dict[str, Any]:
    """Parameter -> default of ``target``, following **kwargs up the MRO of a class."""
    defaults: dict[str, Any] = {}
    functions = [target]
    if inspect.isclass(target):  # each class's own __init__, the subclass's first
        functions = [vars(c)["__init__"] for c in inspect.getmro(target) if "__init__" in vars(c)]
    for function in functions:
        try:
            parameters = inspect.signature(inspect.unwrap(function)).parameters
        except (TypeError, ValueError):
            continue
        for parameter in parameters.values():
            if parameter.default is not parameter.empty:
                defaults.setdefault(parameter.name, parameter.default)
        if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            break
    return defaults


def same(yaml_value: Any, default: Any) -> bool:
    """Equal values of the same kind (YAML lists stand for tuples, 5 for 5.0; never 1 for True)."""
    if isinstance(default, tuple):
        default = list(default)
    numbers = all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in (yaml_value, default)
    )
    return yaml_value == default and (numbers or type(yaml_value) is type(default))


@functools.cache  # both tests read every option file: compose each once
def restated_defaults(file: Path) -> tuple[tuple[str, str, str, Any, Any], ...]:
    """(path, target, parameter, YAML value, Python default) of each Python default ``file``
    restates, in the config that selecting it composes."""
    return tuple(restatements(file))


def restatements(file: Path) -> Iterator[tuple[str, str, str, Any, Any]]:
    overrides, package = selection(file)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        composed = compose("config", overrides=overrides, return_hydra_config=True)
    written = OmegaConf.load(file)
    for parent, key, value in written_values(written):
        path = ".".join(p for p in (package, parent) if p)
        node = OmegaConf.select(composed, path) if path else composed
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        target = str(node["_target_"])
        if not target.startswith(PROJECT):
            continue
        defaults = python_defaults(get_object(target))
        if key in defaults:
            yield f"{path}.{key}" if path else key, target, key, value, defaults[key]


@pytest.mark.parametrize(
    "file", option_files(), ids=lambda file: file.relative_to(CONF).with_suffix("").as_posix()
)
def test_option_file_values_equal_the_python_defaults_or_are_deliberate(file):
    disagreements = [
        f"{path}: {value!r} in the YAML, {default!r} in {target}"
        for path, target, key, value, default in restated_defaults(file)
        if not same(value, default) and (target, key) not in DELIBERATE
    ]
    assert not disagreements, (
        "option file and constructor disagree (change one, or list the difference with its "
        "reason in DELIBERATE): " + "; ".join(disagreements)
    )


def test_every_deliberate_difference_is_still_a_difference():
    found = {
        (target, key)
        for file in option_files()
        for _, target, key, value, default in restated_defaults(file)
        if not same(value, default)
    }
    assert set(DELIBERATE) <= found, sorted(set(DELIBERATE) - found)
