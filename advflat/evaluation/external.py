"""``advflat.evaluate``: the paper's evaluation of any classifier, from Python.

The evaluation is built exactly as a training run builds its own: the packaged conf composed
with ``evaluation=NAME`` and the overrides (``advflat.cli.eval_config.packaged_config``), its
``evaluation`` node built by ``advflat.core.config.build``. So the result has the keys a run's
``metrics.json`` holds for that evaluation, each metric drawing from the stream seeded by
(``evaluation.seed``, its name), and a model evaluated here and by ``advflat-eval`` with the same
config and data gets the same numbers.

The inputs are checked before anything runs, each problem one line: the model in eval mode
(evaluating in train mode would update BN statistics and measure dropout noise), images a
float (N, C, H, W) batch in [0, 1], labels class indices below the model's output width (probed
with one forward pass: a model from elsewhere has no ``num_classes``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from advflat.attacks.inputs import check_structure, describe, values_ok
from advflat.cli.eval_config import packaged_config, parse_overrides, require_threat_model
from advflat.cli.paths import CONFIG_DIR
from advflat.core import checks
from advflat.core.config import build, checked_option
from advflat.core.errors import ConfigError, first_line
from advflat.data.base import ImageData, Split
from advflat.evaluation.evaluation import Evaluation
from advflat.evaluation.external_data import WHO, Pair, given_splits
from advflat.evaluation.metric import Metric
from advflat.evaluation.performance import RobustGeneralizationGap

log = logging.getLogger(__name__)


def evaluate(
    model: nn.Module,
    data: Any,
    evaluation: str = "paper",
    *,
    overrides: Sequence[str] = (),
    files_to: str | Path | None = None,
) -> dict[str, float]:
    """The metrics of ``evaluation`` (a ``conf/evaluation`` option: paper, quick, study) for
    ``model`` on ``data``, as ``{"test/robust_error/pgd": 0.43, ...}``.

    Args:
        model: an ``nn.Module`` in eval mode taking images (B, C, H, W) in [0, 1] and returning
            logits (B, K); wrap one trained on normalised images in
            ``advflat.models.Normalized``. The data goes to the device of its parameters.
        data: the test examples as ``(x_test, y_test)`` or a torchvision-style dataset of
            (image tensor, label) items; ``{"test": ..., "train": ...}`` to add training
            examples (the train robust loss, hence the robust generalization gap); an advflat
            ``ImageData``; or a ``conf/dataset`` option name ("digits"). Without training
            examples the metrics that need them are left out, said in one warning line.
        evaluation: the evaluation option.
        overrides: command-line overrides of the evaluation, as ``advflat-eval`` takes them:
            ``["evaluation.epsilon=0.1", "evaluation.metrics.autoattack=null"]``; with a
            dataset option name also its keys (``"dataset.test_first=100"``).
        files_to: the folder where the metrics that draw (loss landscapes) write their data
            and plots; None writes no file.

    Non-finite values stay floats here; ``metrics.json`` writes them as null.
    """
    _device(model)  # a model in train mode is refused before the config is composed
    config = composed(evaluation, overrides, data if isinstance(data, str) else None)
    given = build(config["dataset"], "dataset") if isinstance(data, str) else data
    return evaluate_composed(model, given, config["evaluation"], files_to)


def evaluate_composed(
    model: nn.Module, data: Any, evaluation_cfg: dict[str, Any], files_to: str | Path | None
) -> dict[str, float]:
    """``evaluate`` with its evaluation config composed already (``composed``'s, resolved):
    what ``advflat-eval --model`` runs once it has built the dataset and the model."""
    device = _device(model)
    built: Evaluation = build(evaluation_cfg, "evaluation")
    test, train = given_splits(data)
    checked = _checked(model, device, test, train)
    if train is None:
        _leave_out_train_metrics(built)
    if files_to is not None:
        built.write_files_to(files_to)
    return built(model, checked)


def _device(model: nn.Module) -> torch.device:
    """The device of ``model``'s parameters, after refusing a model in train mode."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"{WHO}: model must be a torch.nn.Module, got {type(model).__name__}")
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if training:
        raise ValueError(
            f"{WHO}: the model is in train mode ({', '.join(training[:3])}); call model.eval() "
            "first (train mode would update BN statistics and measure dropout noise)"
        )
    parameter = next(model.parameters(), None)
    if parameter is None:
        raise ValueError(f"{WHO}: the model has no parameters (nothing to measure flatness of)")
    return parameter.device


def composed(evaluation: str, overrides: Sequence[str], dataset: str | None) -> dict[str, Any]:
    """The packaged conf composed with the evaluation (and dataset) option and ``overrides``,
    resolved: what a training run with these command-line arguments would evaluate with. The
    threat model is the evaluation's (its packaged ε and step size, or the overrides'): a
    model from elsewhere stores none."""
    checked_option(checks.one_of, "evaluation", evaluation, _options("evaluation"))
    selections = [f"evaluation={evaluation}"]
    if dataset is not None:
        checked_option(checks.one_of, "dataset", dataset, _options("dataset"))
        selections.append(f"dataset={dataset}")
    _check_overrides(overrides, ("evaluation", "dataset") if dataset else ("evaluation",))
    config = packaged_config([*selections, *overrides], resolve=True)
    require_threat_model(config, f"evaluation={evaluation} with overrides {list(overrides)}")
    return config


def _options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))


def _check_overrides(overrides: Sequence[str], nodes: tuple[str, ...]) -> None:
    """Refuse overrides of anything but the keys of ``nodes`` (training keys would be ignored
    in silence) and a second choice of an option the arguments choose."""
    if isinstance(overrides, str) or not all(isinstance(line, str) for line in overrides):
        raise ConfigError(
            f"overrides must be a list of strings such as ['evaluation.epsilon=0.1'], got "
            f"{overrides!r}"
        )
    for item in parse_overrides(list(overrides)):
        key = item.package or item.key_or_group
        if key.split(".")[0] not in nodes or key in nodes:
            keys = " and ".join(f"{node}.KEY" for node in nodes)
            raise ConfigError(
                f"overrides: {item.input_line!r} is not an override of {keys} (choose the "
                "evaluation and the data with the arguments of advflat.evaluate)"
            )


def _checked(model: nn.Module, device: torch.device, test: Pair, train: Pair | None) -> ImageData:
    """The splits on ``model``'s device as an ImageData, after the input checks."""
    pairs = {"test": test} if train is None else {"test": test, "train": train}
    moved = {name: _structure(name, *pair, device) for name, pair in pairs.items()}
    shapes = {name: tuple(split.x.shape[1:]) for name, split in moved.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"{WHO}: the test and train images differ in shape: {shapes}")
    classes = _output_width(model, moved["test"].x[:1])
    for name, split in moved.items():
        if not bool(values_ok(split.x, split.y, classes)):
            raise ValueError(describe(f"{WHO} ({name})", split.x, split.y, classes))
    if train is not None:
        return ImageData(moved["train"], moved["test"], classes)
    # ImageData takes normalisation statistics from its training images (no metric reads them):
    # the test images stand in, and the train split is then left empty so that no metric can
    # measure the test images under the name of training examples.
    data = ImageData(moved["test"], moved["test"], classes)
    data.train = moved["test"].first(0)
    return data


def _structure(name: str, x: Tensor, y: Tensor, device: torch.device) -> Split:
    """The split on ``device`` after the checks of types, dtypes and shapes."""
    who = f"{WHO} ({name})"
    x, y = x.to(device), y.to(device)
    check_structure(who, x, y)
    if x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(f"{who}: x must be images (N, C, H, W) with N >= 1, got {tuple(x.shape)}")
    return Split(x, y)


def _output_width(model: nn.Module, image: Tensor) -> int:
    """K, the number of logits ``model`` returns for one image."""
    try:
        with torch.no_grad():
            logits = model(image)
    except (RuntimeError, ValueError, TypeError) as error:
        raise ValueError(
            f"{WHO}: the model fails on one test image of shape {tuple(image.shape)}: "
            f"{first_line(error)}"
        ) from error
    if not torch.is_tensor(logits) or logits.dim() != 2 or logits.shape[0] != 1:
        got = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
        raise ValueError(f"{WHO}: the model must return logits (B, K), got {got} for B = 1")
    return int(logits.shape[1])


def _leave_out_train_metrics(evaluation: Evaluation) -> None:
    """Without training examples, switch off the metrics on the train split and the robust
    generalization gap (test minus train robust loss), as ``evaluation.metrics.NAME=null``."""
    left_out = [
        name
        for name, metric in evaluation.metrics.items()
        if metric is not None and _needs_train(metric)
    ]
    if not left_out:
        return
    if len(left_out) == sum(metric is not None for metric in evaluation.metrics.values()):
        raise ValueError(
            f"{WHO}: every metric of this evaluation needs training examples "
            f"({', '.join(left_out)}): give data={{'test': (x, y), 'train': (x, y)}}"
        )
    for name in left_out:
        evaluation.metrics[name] = None
    log.warning(
        "%s: no training examples given, so these metrics are left out: %s "
        "(give data={'test': ..., 'train': ...} to measure them)",
        WHO,
        ", ".join(left_out),
    )


def _needs_train(metric: Metric) -> bool:
    return getattr(metric, "split", None) == "train" or isinstance(metric, RobustGeneralizationGap)
