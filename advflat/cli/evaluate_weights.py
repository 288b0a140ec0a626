"""``advflat-eval --model SOURCE WEIGHTS.pt dataset=NAME [overrides] [--out DIR]``.

Evaluates weights advflat did not train: the architecture comes from ``--model``
(``advflat.models.factory``), the weights from the file (``advflat.evaluation.external_weights``),
the dataset, the evaluation and its threat model from the command line, exactly as
``advflat.evaluate(model, "NAME", evaluation, overrides=[...])`` has them (the same composition,
the same numbers). ``device=cpu|cuda|auto`` chooses where it runs.

A zoo entry that records what it was trained for (``--model robustbench:cifar10/L2/Standard``)
brings its dataset (``dataset=`` may then be left out; another dataset than the zoo's is
refused, the user's own files allowed) and its threat model (norm, ε, step size, before the
command line's overrides: those win). Its weights are a checkpoint file, or the zoo's own
loader's folder (``advflat.models.robustbench_zoo.load``: downloaded there when absent).

The results are written as a run folder, so ``advflat-report`` reads them like any run:
``metrics.json`` (written last: it marks a finished evaluation), ``config.json`` (the dataset and
evaluation nodes, the model's ``source`` and ``weights`` file with its SHA-256, and a ``name``
made of the two that the report's rows show) and ``.hydra/overrides.yaml`` (the command's
overrides, labels only); landscapes in ``landscapes/``. Without ``--out`` the folder is
``outputs/evals/<weights stem>-<hash of config.json>``. A folder holding this evaluation
already is left as it is (``--force`` redoes it); one holding another is refused.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import yaml
from torch import Tensor, nn

from advflat.cli.eval_config import override_line, parse_overrides
from advflat.cli.run_folder import differing_keys, plain
from advflat.cli.zoo_threat_model import threat_overrides
from advflat.core.config import build
from advflat.core.errors import ConfigError
from advflat.core.io import save_json, save_text
from advflat.core.schema import read_json
from advflat.core.strict_json import metrics_for_json
from advflat.evaluation.checkpoints import read_result
from advflat.evaluation.external import composed, evaluate_composed
from advflat.evaluation.external_weights import load_into, read_weights
from advflat.evaluation.snapshot_results import evaluation_hash
from advflat.evaluation.summary import summary_table
from advflat.models.factory import ModelSource
from advflat.models.robustbench_zoo import ZooEntry
from advflat.runs.pipeline import resolve_device
from advflat.runs.run_lock import hold, release

log = logging.getLogger("advflat.eval")
DEFAULT_ROOT = Path("outputs") / "evals"
# Options chosen by name on the command line (dataset=, evaluation=, device=), the rest being
# overrides of their keys; the evaluation defaults to the paper's, the dataset has no default
# (its class count shapes the model).
CHOSEN = ("dataset", "evaluation", "device")
DEFAULTS = {"evaluation": "paper", "device": "auto"}
CHUNK = 2**20


def evaluate_weights(
    source: ModelSource, weights: Path, overrides: list[str], out: Path | None, force: bool
) -> dict[str, float]:
    """Evaluate ``weights`` in the architecture ``source`` builds; write and return the metrics.
    Every option is checked before the weights are read and the data is loaded."""
    entry = source.entry()
    chosen, rest = _chosen(overrides, entry)
    config = composed(chosen["evaluation"], rest, chosen["dataset"])
    if entry is not None:  # the zoo's threat model, under the command line's overrides
        threat = threat_overrides(config["evaluation"], entry.threat_model())
        config = composed(chosen["evaluation"], [*threat, *rest], chosen["dataset"])
    device = resolve_device(chosen["device"])
    loaded, weights = _weights(source, weights)
    stored = stored_config(config, source, weights, chosen["device"])
    folder = out or DEFAULT_ROOT / f"{weights.stem}-{evaluation_hash(stored)}"
    folder.mkdir(parents=True, exist_ok=True)
    hold(folder, "evaluation")
    try:
        done = _finished(folder, stored, force)
        if done is not None:
            return done
        data = build(config["dataset"], "dataset").to(device)
        model = loaded if isinstance(loaded, nn.Module) else _built(source, loaded, weights, data)
        model = model.to(device).eval()
        metrics = evaluate_composed(model, data, config["evaluation"], folder / "landscapes")
        save_text(folder / ".hydra" / "overrides.yaml", yaml.safe_dump(overrides))
        save_json(folder / "config.json", stored, sort_keys=False)
        save_json(folder / "metrics.json", metrics_for_json(metrics))
    finally:
        release(folder)
    log.info("%s (%s):\n%s", folder, source.text, summary_table(metrics))
    return metrics


def _weights(source: ModelSource, path: Path) -> tuple[dict[str, Tensor] | nn.Module, Path]:
    """The state_dict in the file ``path``; for a zoo entry and a folder, the zoo's model with
    its weights (RobustBench's loader, reading or downloading its file below the folder),
    with the path of that file."""
    if path.is_dir() and source.publishes():
        return source.published(path)
    return source.fitted(read_weights(path)), path


def _built(source: ModelSource, state: dict[str, Tensor], path: Path, data: Any) -> nn.Module:
    model = source.build(data.num_classes)
    load_into(model, state, path, source.text)
    return model


def _chosen(overrides: list[str], entry: ZooEntry | None) -> tuple[dict[str, str], list[str]]:
    """The options ``CHOSEN`` names (``dataset=arrays``) and the other overrides, as given; a
    zoo entry's dataset when none is given."""
    chosen = dict(DEFAULTS)
    rest = []
    for item in parse_overrides(overrides):
        plain = not (item.package or item.is_add() or item.is_force_add() or item.is_delete())
        if plain and item.key_or_group in CHOSEN:
            chosen[item.key_or_group] = str(item.value())
        else:
            rest.append(override_line(item))
    if entry is not None:
        chosen["dataset"] = entry.dataset_option(chosen.get("dataset"))
    if "dataset" not in chosen:
        raise ConfigError(
            "--model: give the dataset the weights are evaluated on, dataset=NAME (its "
            "class count is the model's), e.g. dataset=cifar10"
        )
    return chosen, rest


def stored_config(
    config: dict[str, Any], source: ModelSource, weights: Path, device: str
) -> dict[str, Any]:
    """What ``config.json`` records: the nodes the evaluation used and where the model came
    from; its ``name`` (the report's row label) is the source and the weights' file name."""
    evaluation = config["evaluation"]
    return {
        "name": f"{source.text} ({weights.name})",
        "seed": evaluation["seed"],
        "device": device,
        "model": {"source": source.text, "weights": str(weights), "sha256": sha256(weights)},
        "dataset": config["dataset"],
        "evaluation": evaluation,
    }


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _finished(folder: Path, stored: dict[str, Any], force: bool) -> dict[str, float] | None:
    """The metrics of this very evaluation when ``folder`` holds it (None: evaluate); a folder
    holding another evaluation is refused unless ``force``."""
    metrics, config = folder / "metrics.json", folder / "config.json"
    if force or not metrics.is_file():
        return None
    found, expected = read_json(config) if config.is_file() else None, plain(stored)
    if found != expected:
        keys = ", ".join(differing_keys(found, expected)[:3])
        raise ConfigError(
            f"{folder} holds another evaluation (config.json differs in {keys}): choose "
            "another --out, or add --force to replace it"
        )
    log.info("%s: already evaluated (use --force to redo)", folder)
    return read_result(metrics)
