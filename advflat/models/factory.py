"""The architecture ``advflat-eval --model SOURCE`` builds for weights advflat did not train.

``SOURCE`` is ``PREFIX:NAME``. The prefixes of ``BUILDERS`` name a library's model zoo
(``torchvision:resnet18`` → ``torchvision.models.get_model("resnet18", num_classes=K)``,
``timm:NAME`` → ``timm.create_model(NAME, num_classes=K)``, untrained: the weights come from the
file), with K the dataset's classes; ``robustbench:[DATASET/][THREAT/]NAME`` builds an entry of
RobustBench's model zoo, which also knows the dataset and threat model it was trained for
(``advflat.models.robustbench_zoo``). Any other prefix is a Python module, imported with the
current folder first on ``sys.path`` (``mymodels:tiny_cnn`` → ``mymodels.tiny_cnn()``, called
without arguments). The command line is the user's own, like an import they write; a file never
chooses what is imported. When ``NAME`` is a class, it is also the one user model class a run's
checkpoint may name (``advflat.models.registry``).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from advflat.core.errors import ConfigError, first_line
from advflat.models import robustbench_zoo
from advflat.models.robustbench_zoo import ZooEntry

FORM = "MODULE:FACTORY, torchvision:NAME, timm:NAME or robustbench:NAME"


def _torchvision(name: str, num_classes: int) -> nn.Module:
    models = importlib.import_module("torchvision.models")  # seconds to import: on first use
    return models.get_model(name, weights=None, num_classes=num_classes)


def _timm(name: str, num_classes: int) -> nn.Module:
    try:
        timm = importlib.import_module("timm")  # optional: not a dependency of advflat
    except ImportError:
        raise ConfigError(
            f"--model timm:{name} needs the timm package, which is not installed (pip install timm)"
        ) from None
    return timm.create_model(name, pretrained=False, num_classes=num_classes)


# Prefix → builder(name, num_classes): model zoos whose architectures take the class count.
BUILDERS: dict[str, Callable[[str, int], nn.Module]] = {
    "torchvision": _torchvision,
    "timm": _timm,
    robustbench_zoo.PREFIX: robustbench_zoo.build,
}
# Prefix → the zoo entry a name is (its dataset and threat model), for zoos that record them.
ENTRIES: dict[str, Callable[[str], ZooEntry]] = {robustbench_zoo.PREFIX: robustbench_zoo.entry}
# Prefix → how its published checkpoints' keys become the architecture's.
STATE_FIXES: dict[str, Callable[[dict[str, Tensor]], dict[str, Tensor]]] = {
    robustbench_zoo.PREFIX: robustbench_zoo.fitted
}
# Prefix → its own loader of the published weights, (name, folder) → (model, weights file).
PUBLISHERS: dict[str, Callable[[str, Path], tuple[nn.Module, Path]]] = {
    robustbench_zoo.PREFIX: robustbench_zoo.published
}


@dataclass(frozen=True)
class ModelSource:
    """A parsed ``--model`` value: ``prefix:name`` as given."""

    prefix: str
    name: str

    @property
    def text(self) -> str:
        return f"{self.prefix}:{self.name}"

    def entry(self) -> ZooEntry | None:
        """The zoo entry ``name`` is (dataset, threat model), for a zoo that records them."""
        parse = ENTRIES.get(self.prefix)
        return None if parse is None else parse(self.name)

    def fitted(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """``state`` with the zoo's checkpoint key conventions undone (as it is, elsewhere)."""
        fix = STATE_FIXES.get(self.prefix)
        return state if fix is None else fix(state)

    def publishes(self) -> bool:
        """Whether the zoo loads its published weights itself (into a folder of its own)."""
        return self.prefix in PUBLISHERS

    def published(self, folder: Path) -> tuple[nn.Module, Path]:
        """The zoo's model with its published weights from ``folder``, and their file."""
        return PUBLISHERS[self.prefix](self.name, folder)

    def factory(self) -> Any:
        """The user's callable ``MODULE:FACTORY`` names (None for a model zoo's prefix)."""
        if self.prefix in BUILDERS:
            return None
        module = _import(self.prefix, self.text)
        found = getattr(module, self.name, None)
        if found is None or not callable(found):
            raise ConfigError(
                f"--model {self.text}: module {self.prefix!r} has no class or function "
                f"{self.name!r}"
            )
        return found

    def trusted(self) -> type[nn.Module] | None:
        """The class ``MODULE:CLASS`` names, which a run's checkpoint may name (else None)."""
        found = self.factory()
        return found if isinstance(found, type) and issubclass(found, nn.Module) else None

    def build(self, num_classes: int) -> nn.Module:
        """The architecture, untrained: a zoo's with ``num_classes`` logits, or the factory's."""
        builder = BUILDERS.get(self.prefix)
        try:
            model = self.factory()() if builder is None else builder(self.name, num_classes)
        except ConfigError:
            raise
        except (TypeError, ValueError, RuntimeError, KeyError) as error:
            raise ConfigError(
                f"--model {self.text}: building it failed: {first_line(error)}"
            ) from None
        if not isinstance(model, nn.Module):
            raise ConfigError(
                f"--model {self.text} returned a {type(model).__name__}, not a torch.nn.Module"
            )
        return model


def model_source(text: str) -> ModelSource:
    """``text`` (``PREFIX:NAME``) as a ModelSource; a malformed one is a one-line error."""
    prefix, _, name = text.partition(":")
    if not prefix or not name or ":" in name:
        raise ConfigError(f"--model must be {FORM}, got {text!r}")
    if prefix not in BUILDERS and not (
        all(part.isidentifier() for part in prefix.split(".")) and name.isidentifier()
    ):
        raise ConfigError(
            f"--model {text}: MODULE must be a dotted module name and FACTORY a name in it"
        )
    return ModelSource(prefix, name)


def _import(module: str, text: str) -> Any:
    """``import module`` with the current folder first on the path, as ``python -m`` has it."""
    # It stays there: the factory may import more of the user's modules when it is called.
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is not None and f"{module}.".startswith(f"{error.name}."):
            raise ConfigError(
                f"--model {text}: no module named {error.name!r} in the current folder or on "
                "the Python path"
            ) from None
        raise ConfigError(
            f"--model {text}: importing {module} failed: {first_line(error)}"
        ) from None
