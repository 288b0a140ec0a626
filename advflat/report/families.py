"""Which method a run belongs to, in words: its family (the experiment preset, else the run's
name or trainer) and the hyper-parameters swept across the report's runs.

Overrides every run shares (``evaluation=quick``, a smaller dataset) describe the study, not a
method, so only those that differ between runs name a setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from advflat.report.collect import Run
from advflat.report.names import CLEAN_ERROR

DEFAULT_NAME = "sweep"  # config.yaml's name: a run launched without a preset
PRESET_GROUPS = ("family", "experiment")  # a study sweeps +family=…, a plain sweep experiment=…
NOT_HYPER_PARAMETERS = ("seed", *PRESET_GROUPS)
PLAIN_UPDATE = "OptimizerStep"  # trainer/update=sgd: named by its loss alone
TRAINED = "advflat"  # the source of a run advflat trained


def family(run: Run) -> str:
    """The run's family or experiment preset (``paper/at``), else its name, else its training
    method: the loss and, when it is not the plain optimizer step, the update
    (``TRADESLoss + AWP``)."""
    for key in PRESET_GROUPS:
        if key in run.overrides:
            return run.overrides[key]
    name = run.config.get("name")
    if name and name != DEFAULT_NAME:
        return str(name)
    trainer = run.config.get("trainer", {})
    parts = [_class_name(trainer.get("loss")), _class_name(trainer.get("update"))]
    return " + ".join(part for part in parts if part and part != PLAIN_UPDATE) or "unknown"


def source(run: Run) -> str:
    """Where the run's model came from: ``advflat`` for a run advflat trained, else the
    ``--model`` source of an external evaluation (its config.json's ``model.source``)."""
    model = run.config.get("model")
    found = model.get("source") if isinstance(model, dict) else None
    return found if isinstance(found, str) and found else TRAINED


def _class_name(node: Any) -> str:
    target = node.get("_target_", "") if isinstance(node, dict) else ""
    return str(target).rsplit(".", 1)[-1]


def swept_keys(runs: list[Run]) -> list[str]:
    """The overrides whose value is not the same in every run (seed and preset excluded)."""
    keys = {k for run in runs for k in run.overrides if k not in NOT_HYPER_PARAMETERS}
    return sorted(k for k in keys if len({run.overrides.get(k) for run in runs}) > 1)


def short_names(keys: list[str]) -> dict[str, str]:
    """``trainer.optimizer.weight_decay`` → ``weight_decay`` unless two keys end alike."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: (s if last.count(s) == 1 else key) for key, s in zip(keys, last, strict=True)}


@dataclass(frozen=True)
class Setting:
    """One method: a family and its hyper-parameters (short name → value, "" when unset), and
    where its models came from (``source``)."""

    family: str
    hyper_parameters: tuple[tuple[str, str], ...]
    source: str = TRAINED

    @property
    def label(self) -> str:
        values = ", ".join(f"{k} = {v}" for k, v in self.hyper_parameters if v != "")
        return f"{self.family} ({values})" if values else self.family


@dataclass(frozen=True)
class Model:
    """One trained run as the report sees it: the run, its method, why it collapsed ("" if not)."""

    run: Run
    setting: Setting
    collapsed: str


def setting_of(run: Run, keys: list[str]) -> Setting:
    names = short_names(keys)
    hyper = tuple((names[k], run.overrides.get(k, "")) for k in keys)
    return Setting(family(run), hyper, source(run))


def collapse_reason(run: Run, classes: int) -> str:
    """Why the run trained to chance level ("" if it did not): training's own diagnosis, else a
    clean error within 2 points of 1 − 1/K (K classes)."""
    flag = run.metrics.get("diagnostics/collapsed")
    if flag is not None:
        return "diagnostics/collapsed = 1" if flag >= 0.5 else ""
    classes = int(run.metrics.get("diagnostics/num_classes", classes))
    chance = 1.0 - 1.0 / classes - 0.02
    error = run.metrics.get(CLEAN_ERROR)
    if error is None or error < chance:
        return ""
    return f"clean error {100 * error:.1f} % ≥ {100 * chance:.1f} % ({classes} classes)"


def epsilon(run: Run) -> float | None:
    value = run.metrics.get("evaluation/epsilon", run.config.get("evaluation", {}).get("epsilon"))
    return None if value is None else float(value)


def xi(run: Run, flatness_key: str) -> float | None:
    """The weight perturbation radius ξ of ``flatness/<kind>/<loss>`` from the run's config."""
    node = "flatness_" + "_".join(flatness_key.split("/")[1:3])
    metrics: dict[str, Any] = run.config.get("evaluation", {}).get("metrics", {}) or {}
    value = ((metrics.get(node) or {}).get("weight_attack") or {}).get("xi")
    return None if value is None else float(value)
