"""advflat-report on small fake studies written in tmp_path (no training): the table, the
correlations with their known answers, the figures, the notes on what is missing, and the cost."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from advflat.cli.report import main
from advflat.evaluation.snapshot_results import result_path
from advflat.report.collect import Run, parse_overrides
from advflat.report.families import family, setting_of, swept_keys
from advflat.report.scatter import family_style

EPSILON = 8 / 255


def config(name: str = "paper_at") -> dict:
    """The parts of config.json the report reads: the preset's name, ε and the flatness ξ."""
    metrics = {
        "flatness_average_robust": {"weight_attack": {"xi": 0.5}},
        "flatness_worst_robust": {"weight_attack": {"xi": 0.003}},
    }
    trainer = {
        "_target_": "advflat.training.Trainer",
        "loss": {"_target_": "advflat.training.losses.AdversarialLoss"},
        "update": {"_target_": "advflat.training.updates.OptimizerStep"},
    }
    return {
        "name": name,
        "trainer": trainer,
        "evaluation": {"epsilon": EPSILON, "metrics": metrics},
    }


def make_run(root: Path, name: str, overrides: list[str], metrics: dict, **files: dict) -> Path:
    """A run folder: overrides, metrics.json, config.json, and optional history/snapshots."""
    path = root / name
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (path / "metrics.json").write_text(json.dumps(metrics))
    (path / "config.json").write_text(json.dumps(files.pop("config", config())))
    if "history" in files:
        (path / "history.json").write_text(json.dumps(files.pop("history")))
    for epoch, values in files.pop("snapshots", {}).items():
        (path / "checkpoints").mkdir(exist_ok=True)
        snapshot = path / "checkpoints" / f"epoch_{epoch:03d}.pt"
        snapshot.write_bytes(b"")  # results are found through their checkpoint
        result_path(snapshot, {"evaluation": "paper"}).write_text(json.dumps(values))
    return path


def paper_metrics(f: float, **more: float) -> dict[str, float]:
    """Flatness f; test robust loss 2f + 1 and gap −f exactly."""
    return {
        "test/clean_error": 0.2,
        "test/robust_error/pgd": 0.5 + f / 10,
        "test/robust_loss/pgd": 2 * f + 1,
        "train/robust_loss/pgd": 3 * f + 1,
        "robust_generalization_gap/pgd": -f,
        "flatness/average/robust": f,
        "flatness/worst/robust": 4 * f,
        "evaluation/epsilon": EPSILON,
        **more,
    }


def read_table(out: Path) -> list[dict[str, str]]:
    with (out / "table.csv").open() as handle:
        return list(csv.DictReader(handle))


def entries(out: Path) -> list[dict]:
    return json.loads((out / "correlations.json").read_text())


def find(found: list[dict], x: str, y: str, snapshot: str = "final") -> dict:
    (entry,) = [e for e in found if (e["x"], e["y"], e["snapshot"]) == (x, y, snapshot)]
    return entry


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two label-smoothing values × 2 seeds of paper/at and one TRADES run, with history and two
    evaluated snapshots each (the best one is epoch 5), plus two collapsed runs off the line;
    the report is written once (figures take seconds) and read by the tests."""
    root = tmp_path_factory.mktemp("study")
    runs = [
        ("paper/at", "trainer.label_smoothing=0.1", 0, 0.1),
        ("paper/at", "trainer.label_smoothing=0.1", 1, 0.3),
        ("paper/at", "trainer.label_smoothing=0.2", 0, 0.5),
        ("paper/at", "trainer.label_smoothing=0.2", 1, 0.7),
        ("paper/trades", "trainer.loss.beta=6.0", 0, 0.9),
    ]
    for i, (experiment, swept, seed, f) in enumerate(runs):
        history = {
            str(e): {"test/robust_loss": 2.0 - e / 20, "train/robust_loss": 2.0 - e / 10}
            for e in range(1, 11)
        }
        snapshots = {
            5: paper_metrics(
                f / 2, **{"test/robust_loss/pgd": 0.5 + f / 10, "cost/evaluation": 2.0}
            ),
            10: paper_metrics(f),
        }
        make_run(
            root,
            f"run{i}",
            [f"experiment={experiment}", swept, f"seed={seed}"],
            paper_metrics(
                f,
                **{
                    "cost/training": 100.0,
                    "cost/evaluation": 10.0,
                    "cost/pgd": 4.0,
                    "cost/flatness_average_robust": 6.0,
                },
            ),
            history=history,
            snapshots=snapshots,
        )
    make_run(
        root,
        "flagged",
        ["experiment=paper/at", "trainer.label_smoothing=0.1", "seed=2"],
        paper_metrics(5.0, **{"diagnostics/collapsed": 1, "test/robust_loss/pgd": 0.0}),
    )
    make_run(
        root,
        "chance",
        ["experiment=paper/at", "trainer.label_smoothing=0.2", "seed=2"],
        paper_metrics(7.0, **{"test/clean_error": 0.89, "test/robust_loss/pgd": 0.0}),
    )
    main([str(root)])
    return root


def test_table_has_one_row_per_method_with_mean_std_over_seeds_and_no_std_for_one_seed(study):
    rows = [r for r in read_table(study / "report") if not r["collapsed"]]
    assert [(r["family"], r["label_smoothing"], r["beta"]) for r in rows] == [
        ("paper/at", "0.1", ""),
        ("paper/at", "0.2", ""),
        ("paper/trades", "", "6.0"),
    ]
    assert [r["n_seeds"] for r in rows] == ["2", "2", "1"]
    assert rows[0]["seeds"] == "0 1"
    assert float(rows[0]["test/robust_loss/pgd"]) == pytest.approx(1.4)
    assert float(rows[1]["test/robust_loss/pgd std"]) == pytest.approx(0.2828427, rel=1e-5)
    assert rows[2]["test/robust_loss/pgd std"] == ""
    markdown = (study / "report" / "table.md").read_text()
    # Errors in %; the PGD robust error is 0.5 + f/10 over f = 0.1, 0.3.
    assert "| paper/at | 0.1 | – | 2 |  | 20.0 ± 0.0 | 52.0 ± 1.4 |" in markdown
    trades = next(line for line in markdown.splitlines() if "paper/trades" in line)
    assert "±" not in trades and "| 2.800 |" in trades  # one seed: the value alone
    assert "PGD robust error (%)" in markdown


def test_correlations_are_a_list_with_the_known_answers_at_both_snapshots(study):
    found = entries(study / "report")
    assert isinstance(found, list)
    keys = {
        "x",
        "y",
        "n",
        "pearson",
        "pearson_ci",
        "spearman",
        "spearman_ci",
        "p_value",
        "snapshot",
    }
    assert all(keys <= set(e) for e in found)
    measures = ("flatness/average/robust", "flatness/worst/robust")
    targets = ("test/robust_loss/pgd", "robust_generalization_gap/pgd")
    pairs = {(e["x"], e["y"], e["snapshot"]) for e in found}
    assert pairs == {
        (x, y, s) for x in measures for y in targets for s in ("final", "best_test_robust_loss")
    }
    loss = find(found, "flatness/average/robust", "test/robust_loss/pgd")
    assert (loss["n"], loss["pearson"], loss["spearman"]) == (5, pytest.approx(1), pytest.approx(1))
    assert loss["pearson_ci"] == pytest.approx([1, 1])
    assert find(found, "flatness/worst/robust", "robust_generalization_gap/pgd")[
        "pearson"
    ] == pytest.approx(-1)
    for entry in found:
        assert (study / "report" / "correlations" / entry["plot"]).stat().st_size > 10_000


def test_best_snapshot_is_the_lowest_test_robust_loss_of_each_run(study):
    # Epoch 5 (loss 0.5 + f/10) beats the final model (2f + 1) in every run: its gap is −f/2.
    best = find(
        entries(study / "report"),
        "flatness/average/robust",
        "robust_generalization_gap/pgd",
        "best_test_robust_loss",
    )
    final = find(
        entries(study / "report"), "flatness/average/robust", "robust_generalization_gap/pgd"
    )
    assert best["n"] == final["n"] == 5
    assert best["pearson"] == pytest.approx(-1)
    assert best["plot"] != final["plot"]


def test_over_epoch_figures_are_one_per_method(study):
    figures = sorted(p.name for p in (study / "report" / "over_epochs").glob("*.png"))
    assert len(figures) == 3, figures
    assert all((study / "report" / "over_epochs" / f).stat().st_size > 10_000 for f in figures)


def test_collapsed_runs_are_marked_in_the_table_and_left_out_of_the_correlations(study):
    rows = read_table(study / "report")
    marked = [r for r in rows if r["collapsed"]]
    assert len(rows) == 5 and len(marked) == 2
    assert "clean error 89.0 % ≥ 88.0 % (10 classes)" in [r["collapsed"] for r in marked]
    loss = find(entries(study / "report"), "flatness/average/robust", "test/robust_loss/pgd")
    assert (loss["n"], loss["pearson"]) == (5, pytest.approx(1))  # the outliers are not in
    notes = (study / "report" / "table.md").read_text()
    assert notes.count("collapsed, left out of the correlations") == 2
    assert str(study / "chance") in notes and "diagnostics/collapsed = 1" in notes


def test_missing_flatness_is_named_in_one_line_and_correlations_are_empty(tmp_path, caplog):
    for i in range(12):
        make_run(
            tmp_path,
            f"run{i}",
            [f"seed={i}"],
            {"test/clean_error": 0.3, "test/robust_loss/pgd": 1.0},
        )
    main([str(tmp_path)])
    assert entries(tmp_path / "report") == []
    message = (
        "no correlation plots for flatness/average/robust: none of the 12 runs has "
        "flatness/average/robust (evaluate with evaluation=paper, or advflat-eval DIR --all)"
    )
    assert message in caplog.text
    assert "no over-epoch plots" in caplog.text
    assert not (tmp_path / "report" / "correlations").exists()


def test_fewer_than_three_models_give_a_message_and_no_entry(tmp_path, caplog):
    for i, f in enumerate([0.1, 0.2]):
        make_run(tmp_path, f"run{i}", [f"seed={i}"], paper_metrics(f))
    main([str(tmp_path)])
    assert entries(tmp_path / "report") == []
    assert (
        "no correlation for flatness/average/robust vs test/robust_loss/pgd (final): "
        "only 2 model(s) have both, need ≥ 3"
    ) in caplog.text


def test_cost_is_totalled_per_family_training_and_evaluation(study):
    cost = (study / "report" / "cost.md").read_text()
    # 4 paper/at runs: 4 × 100 s training; 4 × (10 + 2 from the epoch-5 snapshot) s evaluation.
    # The 2 collapsed runs count too (they were paid for) but record no cost.
    assert "| paper/at | 6 | 400 | 48 |" in cost
    assert "| all | 7 | 500 | 60 |" in cost
    assert "| flatness_average_robust | 30 |" in cost
    assert "## Cost" in (study / "report" / "table.md").read_text()


def test_report_on_an_empty_directory_is_a_clear_error(tmp_path, caplog):
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
    assert "no runs" in caplog.text


@pytest.mark.slow  # trains one tiny run (1 epoch of 200 digits) with the `advflat` command
def test_report_of_a_real_run_has_its_row_and_says_what_is_missing(tmp_path, caplog):
    run = tmp_path / "run"
    command = [
        str(Path(sys.executable).with_name("advflat")),
        "experiment=quickstart",
        "evaluation=quick",
        "dataset.train_first=200",
        "dataset.test_first=100",
        "trainer.epochs=1",
        "trainer.scheduler.milestones=[]",
        f"hydra.run.dir={run}",
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    main([str(tmp_path)])
    metrics = json.loads((run / "metrics.json").read_text())
    (row,) = read_table(tmp_path / "report")
    assert (row["family"], row["n_seeds"]) == ("quickstart", "1")
    assert float(row["test/clean_error"]) == pytest.approx(metrics["test/clean_error"])
    assert bool(row["collapsed"]) == bool(metrics.get("diagnostics/collapsed"))
    assert entries(tmp_path / "report") == []  # evaluation=quick measures no flatness
    assert "advflat-report: no correlation" in caplog.text


def test_family_is_the_preset_and_hyper_parameters_are_only_the_overrides_that_differ():
    def run(*overrides: str, name: str = "sweep", update: str = "AWP") -> Run:
        trainer = {
            "_target_": "advflat.training.Trainer",
            "loss": {"_target_": "advflat.training.losses.TRADESLoss"},
            "update": {"_target_": f"advflat.training.updates.{update}"},
        }
        return Run(
            Path("x"), parse_overrides(list(overrides)), {}, {"name": name, "trainer": trainer}
        )

    runs = [
        run(
            "experiment=paper/at",
            "evaluation=quick",
            "trainer.optimizer.weight_decay=0.01",
            "seed=1",
        ),
        run("+family=iccv/trades_1", "evaluation=quick", "hydra.job.chdir=false"),
        run("evaluation=quick", name="paper_mart"),
        run("evaluation=quick"),
        run("evaluation=quick", update="OptimizerStep"),
    ]
    families = ["paper/at", "iccv/trades_1", "paper_mart", "TRADESLoss + AWP", "TRADESLoss"]
    assert [family(r) for r in runs] == families
    keys = swept_keys(runs)
    assert keys == ["trainer.optimizer.weight_decay"]  # shared, seed and presets are not
    assert setting_of(runs[0], keys).label == "paper/at (weight_decay = 0.01)"
    assert setting_of(runs[3], keys).label == "TRADESLoss + AWP"


def test_every_family_of_a_large_study_gets_its_own_colour_and_marker():
    styles = {family_style(index) for index in range(90)}
    assert len(styles) == 90
