"""``--model robustbench:[DATASET/][THREAT/]NAME``: an architecture of RobustBench's model zoo.

``NAME`` is a model of the zoo (``Carmon2019Unlabeled``); the dataset and the threat model
default to RobustBench's own (``cifar10``, ``Linf``), so ``robustbench:L2/Standard`` is
``cifar10/L2/Standard``. The entry brings what the model was trained for: its dataset (the
``dataset=`` option when the command line gives none) and its threat model (the evaluation's
ε, step size and every attack's norm, under the command line's overrides). Zoo models take
images in [0, 1] and normalise them themselves, as advflat's evaluation expects.

RobustBench is optional (``pip install advflat[robustbench]``) and imported only for this
prefix. Only its model zoo and loader are used: the package's ``__init__`` also imports its
own benchmark code (pandas, and an AutoAttack release PyPI does not carry), so the package is
entered without running it (``_package``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from advflat.core.errors import ConfigError

PREFIX = "robustbench"
INSTALL = "pip install advflat[robustbench]"
DEFAULT_DATASET, DEFAULT_THREAT = "cifar10", "Linf"  # robustbench.utils.load_model's defaults
PARALLEL = "module."  # the key prefix of weights saved from an nn.DataParallel wrapper


@dataclass(frozen=True)
class ThreatModel:
    """An evaluation's threat model: advflat's attack norm, ε and PGD step size."""

    norm: str
    epsilon: float
    step_size: float


# (RobustBench dataset, threat model) → the threat model of its leaderboard. Steps: the
# paper's 0.007 at 8/255; ε/5 for L2 (the common L2 PGD step); ε/4 at ImageNet's 4/255.
THREAT_MODELS = {
    ("cifar10", "Linf"): ThreatModel("linf", 8 / 255, 0.007),
    ("cifar100", "Linf"): ThreatModel("linf", 8 / 255, 0.007),
    ("cifar10", "L2"): ThreatModel("l2", 0.5, 0.1),
    ("imagenet", "Linf"): ThreatModel("linf", 4 / 255, 1 / 255),
}
# RobustBench dataset → its class count and the advflat dataset options that are it.
CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
DATASETS: dict[str, tuple[str, ...]] = {
    "cifar10": ("cifar10", "cifar10_autoaugment"),
    "cifar100": ("cifar100",),
    "imagenet": (),
}
OWN_FILES = ("arrays", "folder", "hdf5")  # options that read the user's own copy of any dataset


@dataclass(frozen=True)
class ZooEntry:
    """A parsed ``robustbench:`` name: RobustBench's dataset, threat model and model names."""

    dataset: str
    threat: str
    name: str

    @property
    def text(self) -> str:
        return f"{PREFIX}:{self.dataset}/{self.threat}/{self.name}"

    def threat_model(self) -> ThreatModel:
        """The leaderboard's threat model; a corruptions benchmark is refused."""
        found = THREAT_MODELS.get((self.dataset, self.threat))
        if found is None:
            known = ", ".join(f"{dataset}/{threat}" for dataset, threat in THREAT_MODELS)
            raise ConfigError(
                f"--model {self.text}: advflat evaluates norm-ball threat models only "
                f"({known}), not {self.dataset}/{self.threat}"
            )
        return found

    def dataset_option(self, given: str | None) -> str:
        """The ``dataset=`` option: ``given`` when it is this dataset or the user's own files,
        else the zoo's; a given option of another dataset is refused."""
        own = DATASETS.get(self.dataset, ())
        if given is None:
            if not own:
                raise ConfigError(
                    f"--model {self.text}: advflat has no {self.dataset} option; give your "
                    f"copy of it, dataset={' | '.join(OWN_FILES)}"
                )
            return own[0]
        if given not in own and given not in OWN_FILES:
            raise ConfigError(
                f"--model {self.text} was trained on {self.dataset}, not dataset={given} "
                f"(allowed: {', '.join((*own, *OWN_FILES))})"
            )
        return given


def entry(name: str) -> ZooEntry:
    """``[DATASET/][THREAT/]NAME`` as a ZooEntry, RobustBench's defaults filling the gaps."""
    parts = name.split("/")
    if len(parts) > 3 or not all(parts):
        raise ConfigError(
            f"--model {PREFIX}:{name}: expected {PREFIX}:[DATASET/][THREAT/]NAME, e.g. "
            f"{PREFIX}:cifar10/Linf/Carmon2019Unlabeled"
        )
    defaults = [DEFAULT_DATASET, DEFAULT_THREAT][: 3 - len(parts)]
    dataset, threat, model = [*defaults, *parts]
    return ZooEntry(dataset, threat, model)


def build(name: str, num_classes: int) -> nn.Module:
    """The zoo's architecture for ``name``, untrained (the factory of its zoo entry)."""
    found = entry(name)
    found.threat_model()  # a benchmark advflat cannot evaluate is refused before building
    classes = CLASSES[found.dataset]
    if num_classes != classes:
        raise ConfigError(f"--model {found.text} has {classes} classes, the dataset {num_classes}")
    return _zoo_entry(found)["model"]()


def fitted(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A zoo checkpoint's state_dict with the ``module.`` prefix of DataParallel removed."""
    if not state or not all(key.startswith(PARALLEL) for key in state):
        return state
    return {key[len(PARALLEL) :]: value for key, value in state.items()}


def checkpoint_path(name: str, model_dir: Path) -> Path:
    """Where RobustBench's loader keeps ``name``'s weights below ``model_dir``."""
    found = entry(name)
    return model_dir / found.dataset / found.threat / f"{found.name}.pt"


def published(name: str, model_dir: Path) -> tuple[nn.Module, Path]:
    """The zoo model with its published weights, by RobustBench's own loader, and their file:
    read from ``model_dir`` (RobustBench's layout, ``checkpoint_path``), downloaded there when
    absent."""
    found = entry(name)
    _zoo_entry(found)
    utils = _module("robustbench.utils")
    try:
        model: nn.Module = utils.load_model(
            found.name, model_dir=str(model_dir), dataset=found.dataset, threat_model=found.threat
        )
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        raise ConfigError(f"--model {found.text}: RobustBench's loader failed: {error}") from None
    return model, checkpoint_path(name, model_dir)


def _zoo_entry(found: ZooEntry) -> dict[str, Any]:
    """RobustBench's ``model_dicts`` entry; an unknown name is a one-line error."""
    zoo = _module("robustbench.model_zoo")
    models = {
        (dataset.value, threat.value): entries
        for dataset, by_threat in zoo.model_dicts.items()
        for threat, entries in by_threat.items()
    }
    entries = models.get((found.dataset, found.threat))
    if entries is None:
        known = ", ".join(f"{dataset}/{threat}" for dataset, threat in models)
        raise ConfigError(
            f"--model {found.text}: RobustBench has no {found.dataset}/{found.threat} models "
            f"(it has {known})"
        )
    if found.name not in entries:
        raise ConfigError(
            f"--model {found.text}: RobustBench has no model {found.name!r} for "
            f"{found.dataset}/{found.threat} ({len(entries)} models there)"
        )
    chosen: dict[str, Any] = entries[found.name]
    return chosen


def _module(name: str) -> Any:
    """``import name`` below RobustBench's package, which is entered without its ``__init__``."""
    _package()
    try:
        with warnings.catch_warnings():
            # Its modules (and timm's) warn about torch APIs they use at import: not the user's.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            return importlib.import_module(name)
    except ModuleNotFoundError as error:
        raise ConfigError(
            f"--model {PREFIX}:NAME needs {error.name}, which RobustBench imports and which is "
            f"not installed ({INSTALL})"
        ) from None


def _package() -> None:
    """Put the ``robustbench`` package in ``sys.modules`` without running its ``__init__``
    (which imports RobustBench's benchmark code, and with it packages PyPI's install of
    RobustBench lacks); an import of the real package, made earlier, is kept."""
    if PREFIX in sys.modules:
        return
    spec = importlib.util.find_spec(PREFIX)
    if spec is None or spec.loader is None:
        raise ConfigError(f"--model {PREFIX}:NAME needs RobustBench, not installed ({INSTALL})")
    sys.modules[PREFIX] = importlib.util.module_from_spec(spec)
