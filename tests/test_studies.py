"""Study presets: every paper preset, the digits-scale study, and a tiny study run like a user
runs one — sweep, snapshot evaluation, report (the original's 29 correlation-plot models:
test_iccv_models.py)."""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

import pytest
from omegaconf import DictConfig

from advflat.core.config import build
from tests.conftest import CONF
from tests.test_sweeps import ADVFLAT, LOG, compose_job, compose_sweep, multirun

PAPER_PRESETS = sorted(p.stem for p in (CONF / "experiment" / "paper").glob("*.yaml"))
# Paper presets deliberately left out of study/iccv_all, each with its reason.
NOT_IN_ICCV_ALL: dict[str, str] = {
    "table1": "a sweep over three architectures (the article's Table 1), not one model family",
}
IN_ICCV_ALL = [preset for preset in PAPER_PRESETS if preset not in NOT_IN_ICCV_ALL]


@functools.cache  # composing a study's sweep takes seconds; every preset's test reads it
def families(study: str) -> tuple[str, ...]:
    cfg = compose_sweep(f"experiment=study/{study}")
    return tuple(name.strip() for name in str(cfg.hydra.sweeper.params["+family"]).split(","))


def job(study: str, family: str) -> DictConfig:
    return compose_job(f"experiment=study/{study}", f"+family={family}")


def loss_of(cfg: DictConfig) -> str:
    return str(cfg.trainer["loss"]["_target_"]).rsplit(".", 1)[-1]


@pytest.mark.parametrize("preset", IN_ICCV_ALL)
def test_iccv_all_study_trains_each_paper_preset_as_it_stands(preset):
    assert f"paper/{preset}" in families("iccv_all")
    alone = compose_job(f"experiment=paper/{preset}")
    in_study = job("iccv_all", f"paper/{preset}")
    for node in ("dataset", "model", "attack", "weight_attack", "trainer", "evaluation"):
        assert in_study[node] == alone[node], node
    assert in_study.evaluate_snapshots


def test_iccv_all_study_lists_every_paper_preset_once_in_file_order():
    expected = [f"paper/{p}" for p in IN_ICCV_ALL]
    assert list(families("iccv_all")) == expected


def test_every_paper_preset_has_its_study_family_file_and_no_family_lacks_a_preset():
    family_files = sorted(p.stem for p in (CONF / "family" / "paper").glob("*.yaml"))
    assert family_files == IN_ICCV_ALL
    for preset in IN_ICCV_ALL:
        text = (CONF / "family" / "paper" / f"{preset}.yaml").read_text()
        assert f"  - /experiment/paper/{preset}\n" in text, preset


def test_mini_study_spans_ten_families_with_five_evaluated_snapshots_each():
    names = families("mini")
    assert len(names) >= 10
    losses, updates = set(), set()
    for name in names:
        cfg = job("mini", name)
        assert cfg.dataset._target_ == "advflat.data.Digits"
        assert cfg.evaluate_snapshots
        assert cfg.trainer.epochs // cfg.trainer.snapshot_every >= 5
        attack = build(cfg.attack, "attack")
        weight_attack = build(cfg.weight_attack, "weight_attack")
        build(cfg.trainer, "trainer", attack=attack, weight_attack=weight_attack)
        losses.add(loss_of(cfg))
        updates.add(str(cfg.trainer["update"]["_target_"]).rsplit(".", 1)[-1])
    assert {"AdversarialLoss", "TRADESLoss", "MARTLoss", "RotationLoss"} <= losses
    assert {"OptimizerStep", "AWP"} <= updates


# A study shrunk to a minute: 3 families × 3 epochs on 600 training digits (fewer epochs leave
# the digits model at chance level, and the report rightly leaves collapsed runs out of its
# correlations; so does AWP's slower start), every epoch a snapshot, the study's metrics at tiny
# budgets on 60 test digits.
TINY_STUDY = [
    "experiment=study/mini",
    "+family=mini/at,mini/pgd2,mini/trades",
    "trainer.epochs=3",
    "dataset.train_first=600",
    "trainer.snapshot_every=1",
    "trainer.scheduler.milestones=[]",
    "dataset.test_first=60",
    "evaluation.metrics.pgd.attack.steps=3",
    "evaluation.metrics.pgd.attack.restarts=1",
    "evaluation.metrics.train_pgd.first=60",
    "evaluation.metrics.train_pgd.attack.steps=3",
    "evaluation.metrics.train_pgd.attack.restarts=1",
    "evaluation.metrics.autoattack.first=8",
    "evaluation.metrics.flatness_average_robust.attempts=2",
    "evaluation.metrics.flatness_average_robust.attack.steps=3",
    "evaluation.metrics.flatness_average_robust.reference_attack.steps=3",
    "evaluation.metrics.flatness_average_robust.reference_attack.restarts=1",
    "evaluation.metrics.flatness_worst_robust.attempts=2",
    "evaluation.metrics.flatness_worst_robust.weight_attack.steps=3",
    "evaluation.metrics.flatness_worst_robust.reference_attack.steps=3",
    "evaluation.metrics.flatness_worst_robust.reference_attack.restarts=1",
    "evaluation.metrics.hessian_clean.last=60",
    "evaluation.metrics.hessian_clean.lanczos_steps=10",
]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory) -> Path:
    sweep = tmp_path_factory.mktemp("study") / "study_tiny"
    result = multirun(*TINY_STUDY, sweep=sweep)
    assert result.returncode == 0, result.stderr[-3000:]
    report = subprocess.run(
        [str(Path(ADVFLAT).with_name("advflat-report")), str(sweep)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    return sweep


def test_a_study_job_evaluates_every_snapshot_and_records_its_costs(tiny_study):
    runs = sorted(p for p in tiny_study.iterdir() if (p / "metrics.json").is_file())
    families = [p.name.removeprefix("+family=").split(",")[0] for p in runs]
    assert families == ["mini_at", "mini_pgd2", "mini_trades"]
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["cost/training"] > 0 and metrics["cost/snapshot_evaluation"] > 0
        assert "flatness/average/robust" in metrics
        for epoch in (1, 2, 3):
            (result,) = (run / "checkpoints").glob(f"epoch_00{epoch}.eval-*.json")
            snapshot = json.loads(result.read_text())
            assert snapshot["epoch"] == epoch
            assert "flatness/average/robust" in snapshot and "test/robust_loss/pgd" in snapshot


def without_costs(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not k.startswith(("cost/", "diagnostics/"))}


def test_the_final_model_reuses_the_last_snapshots_evaluation_of_the_same_weights(tiny_study):
    for run in sorted(p for p in tiny_study.iterdir() if (p / "metrics.json").is_file()):
        metrics = json.loads((run / "metrics.json").read_text())
        (result,) = (run / "checkpoints").glob("epoch_003.eval-*.json")
        snapshot = json.loads(result.read_text())
        snapshot.pop("epoch")
        assert without_costs(metrics) == without_costs(snapshot)
        assert "cost/evaluation" not in metrics  # its seconds are the snapshot's, counted once
        assert "epoch_003.pt: its evaluation is reused" in (run / LOG).read_text()


def test_the_report_of_a_study_writes_every_figure_and_table(tiny_study):
    report = tiny_study / "report"
    for name in ("table.csv", "table.md", "cost.md", "correlations.json"):
        assert (report / name).is_file(), name
    entries = json.loads((report / "correlations.json").read_text())
    assert isinstance(entries, list) and entries
    keys = {"x", "y", "n", "pearson", "pearson_ci", "spearman", "spearman_ci", "p_value"}
    for entry in entries:
        assert keys <= set(entry)
    pairs = {(e["x"], e["y"]) for e in entries if e["n"] == 3}
    assert ("flatness/average/robust", "test/robust_loss/pgd") in pairs
    assert list((report / "correlations").glob("*.png"))
    assert list((report / "over_epochs").glob("*.png"))
    cost = (report / "cost.md").read_text()
    assert "| mini/at | 1 |" in cost and "| all | 3 |" in cost
    assert "snapshot_evaluation" not in cost  # counted once, through the snapshots' own costs


@pytest.mark.parametrize("study", ["iccv", "mini"])
def test_the_flatness_references_are_the_pgd_metric_so_each_snapshot_attacks_once(study):
    # The shared reference is keyed by examples and attack: a budget cut in one place only
    # would silently run the PGD-20 reference twice per snapshot.
    metrics = job(study, families(study)[0]).evaluation.metrics
    for name in ("flatness_average_robust", "flatness_worst_robust"):
        assert metrics[name].reference_attack == metrics.pgd.attack
        assert metrics[name].first == metrics.pgd.first
