"""advflat-eval -m --model SOURCE@WEIGHTS,...: a study of weights advflat did not train, one run
folder per model, resumable; its models as submitit jobs through cluster=; and advflat-report over
it, alone or beside advflat-trained runs."""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

from advflat.cli import evaluate_study as study_module
from advflat.cli.evaluate import main
from advflat.cli.report import main as report
from advflat.cli.study_launcher import StudyJob, run_job
from advflat.models.factory import model_source
from advflat.report.table import SOURCE_PREAMBLE
from advflat.runs.failed_jobs import FAILURE_FILE, Failure
from tests.test_eval_model_flag import CODE as USER_CODE
from tests.test_report import make_run, paper_metrics

MODULE = "advflat_study_models"  # written into a temporary folder, imported from there
CNN, LINEAR = f"{MODULE}:tiny_cnn", f"{MODULE}:linear"
# The user's module of the --model tests, plus a second architecture.
CODE = (
    USER_CODE
    + """

def linear():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
"""
)
# (weights file, factory, full-batch Adam steps on 600 digits): three models well above chance
# level (a collapsed one would rightly be left out of the correlations) that differ in flatness.
MODELS = [("a.pt", "tiny_cnn", 10), ("b.pt", "tiny_cnn", 40), ("c.pt", "linear", 25)]
# Digits, the study's metrics without AutoAttack, worst-case flatness and the Hessian, at tiny
# budgets on 30-40 examples: about a second per model.
METRICS = "evaluation.metrics"
OVERRIDES = [
    "dataset=digits",
    "dataset.train_first=60",
    "dataset.test_first=40",
    "evaluation=study",
    "evaluation.epsilon=0.2",
    "evaluation.step_size=0.05",
    *(
        f"{METRICS}.{name}=null"
        for name in ("autoattack", "flatness_worst_robust", "hessian_clean")
    ),
    *(f"{METRICS}.{name}.first=30" for name in ("pgd", "train_pgd", "flatness_average_robust")),
    *(f"{METRICS}.{name}.attack.steps=3" for name in ("pgd", "train_pgd")),
    *(f"{METRICS}.{name}.attack.restarts=1" for name in ("pgd", "train_pgd")),
    f"{METRICS}.flatness_average_robust.attempts=2",
    f"{METRICS}.flatness_average_robust.attack.steps=3",
    f"{METRICS}.flatness_average_robust.reference_attack.steps=3",
    f"{METRICS}.flatness_average_robust.reference_attack.restarts=1",
    "device=cpu",
]
FOLDERS = [f"{MODULE}_tiny_cnn-a", f"{MODULE}_tiny_cnn-b", f"{MODULE}_linear-c"]
STUDY = ["-m", "--model", f"{CNN}@a.pt,{CNN}@b.pt", "--model", f"{LINEAR}@c.pt", *OVERRIDES]


def train(factory, steps: int) -> torch.nn.Module:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images).float().div(16).unsqueeze(1)[:600]
    y = torch.from_numpy(digits.target)[:600]
    torch.manual_seed(0)
    model = factory()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """A folder holding the user's module and the weights of three models of it."""
    folder = tmp_path_factory.mktemp("user")
    (folder / f"{MODULE}.py").write_text(CODE)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setattr(sys, "path", [str(folder), *sys.path])
        module = __import__(MODULE)
        for file, factory, steps in MODELS:
            torch.save(train(getattr(module, factory), steps).state_dict(), folder / file)
        yield folder
    sys.modules.pop(MODULE, None)


@pytest.fixture(scope="module")
def study(models_dir, tmp_path_factory):
    """The 3-model study, run in-process, and its report."""
    root = tmp_path_factory.mktemp("study") / "external"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(models_dir)
        patch.setattr(sys, "path", list(sys.path))
        main([*STUDY, "--out", str(root)])
    report([str(root)])
    return root


def read_table(out):
    with (out / "table.csv").open() as handle:
        return list(csv.DictReader(handle))


def final_entry(out, x="flatness/average/robust", y="test/robust_loss/pgd"):
    entries = json.loads((out / "correlations.json").read_text())
    (entry,) = [e for e in entries if (e["x"], e["y"], e["snapshot"]) == (x, y, "final")]
    return entry


def without_costs(metrics):
    return {key: value for key, value in metrics.items() if not key.startswith("cost/")}


def error_of(argv, caplog):
    """The one error line advflat-eval ends with (exit status 2)."""
    caplog.clear()
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    return errors[0]


def test_each_model_of_a_study_gets_a_run_folder_of_its_own(study):
    assert sorted(p.name for p in study.iterdir() if p.name != "report") == sorted(FOLDERS)
    sources = [(CNN, "a.pt"), (CNN, "b.pt"), (LINEAR, "c.pt")]
    for folder, (source, weights) in zip(FOLDERS, sources, strict=True):
        config = json.loads((study / folder / "config.json").read_text())
        assert (config["model"]["source"], config["model"]["weights"]) == (source, weights)
        assert "test/robust_loss/pgd" in json.loads((study / folder / "metrics.json").read_text())


def test_a_study_model_has_the_metrics_of_its_own_single_evaluation(study, in_models_dir):
    single = in_models_dir / "single"
    main(["--model", LINEAR, "c.pt", *OVERRIDES, "--out", str(single)])
    alone = json.loads((single / "metrics.json").read_text())
    in_study = json.loads((study / FOLDERS[2] / "metrics.json").read_text())
    assert without_costs(in_study) == without_costs(alone)


def test_the_same_study_again_skips_every_finished_model(study, in_models_dir, caplog):
    caplog.set_level(logging.INFO)
    before = [(study / f / "metrics.json").stat().st_mtime_ns for f in FOLDERS]
    main([*STUDY, "--out", str(study)])
    assert caplog.text.count("already evaluated (use --force to redo)") == 3
    assert [(study / f / "metrics.json").stat().st_mtime_ns for f in FOLDERS] == before


def test_the_report_of_a_study_has_a_source_column_and_correlates_its_models(study):
    rows = read_table(study / "report")
    assert [(r["family"], r["source"]) for r in rows] == [
        (f"{LINEAR} (c.pt)", LINEAR),
        (f"{CNN} (a.pt)", CNN),
        (f"{CNN} (b.pt)", CNN),
    ]
    assert final_entry(study / "report")["n"] == 3
    assert len(list((study / "report" / "correlations").glob("final_*.png"))) == 2
    table = (study / "report" / "table.md").read_text()
    assert SOURCE_PREAMBLE in table
    # External models have no snapshots, so no note asks for their evaluation (advflat-eval --all).
    assert "no best-snapshot correlations" not in table
    assert "no over-epoch plots for the 3 external evaluations" in table


def test_a_report_over_trained_and_external_runs_correlates_them_all(study, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(study, mixed, ignore=shutil.ignore_patterns("report"))
    history = {str(e): {"test/robust_loss": 2.0 - e / 10} for e in range(1, 4)}
    make_run(mixed, "trained", ["experiment=paper/at", *OVERRIDES], paper_metrics(0.4),
             history=history)  # fmt: skip
    report([str(mixed)])
    rows = read_table(mixed / "report")
    assert sorted(r["source"] for r in rows) == ["advflat", LINEAR, CNN, CNN]
    assert [r["family"] for r in rows if r["source"] == "advflat"] == ["paper/at"]
    assert final_entry(mixed / "report")["n"] == 4  # one model per run, trained or not
    # Only the trained run has epochs to plot; the external ones are skipped, with a note.
    assert [p.name for p in (mixed / "report" / "over_epochs").iterdir()] == ["paper_at.png"]
    markdown = (mixed / "report" / "table.md").read_text()
    assert SOURCE_PREAMBLE in markdown and "| family | source | seeds |" in markdown
    assert "| paper/at | advflat | 1 |" in markdown


@pytest.mark.parametrize(
    ("models", "more", "message"),
    [
        ([f"{CNN}:a.pt"], [], "-m --model takes SOURCE@WEIGHTS (e.g. mymodels:tiny_cnn@"),
        ([f"{CNN}@absent.pt"], [], f"-m --model {CNN}@absent.pt: no such weights file: absent.pt"),
        (["tiny_cnn@a.pt"], [], "--model must be MODULE:FACTORY, torchvision:NAME, timm:NAME"),
        ([f"{CNN}@a.pt,{CNN}@./a.pt"], [], f"would share the folder {MODULE}_tiny_cnn-a"),
        ([f"{CNN}@a.pt"], ["cluster=nowhere"], "cluster=nowhere: In 'config': Could not find "),
        (
            [f"{CNN}@a.pt"],
            ["cluster=slurm", "hydra.launcher.partitio=X"],
            "Could not override 'hydra.launcher.partitio'",
        ),
        ([f"{CNN}@a.pt"], ["--all"], "-m: unknown option --all (allowed: --model, --out,"),
    ],
)
def test_a_bad_study_is_a_one_line_error(in_models_dir, caplog, models, more, message):
    argv = ["-m", *(a for m in models for a in ("--model", m)), *OVERRIDES, *more]
    assert message in error_of([*argv, "--out", "study"], caplog)
    assert not (in_models_dir / "study").exists()  # refused before anything is written


def test_a_study_needs_its_folder_and_its_models(in_models_dir, caplog):
    assert "give the study's folder, --out ROOT" in error_of(["-m", *OVERRIDES], caplog)
    message = error_of(["-m", *OVERRIDES, "--out", "study"], caplog)
    assert "-m: name the models with --model SOURCE@WEIGHTS" in message


# ------------------------------------------------------------ a study's models as submitit jobs


class Submissions:
    """Stands in for study_launcher.launch: records what would be submitted, submits nothing."""

    def __init__(self, failures: list[Failure] | None = None):
        self.calls: list[tuple] = []
        self.failures = failures or []

    def __call__(self, executor, jobs, overrides, force):
        self.calls.append((executor, jobs, overrides, force))
        return {}, self.failures


def half_finished(study, tmp_path):
    """A copy of the study whose second model (b.pt) is not evaluated yet."""
    root = tmp_path / "half"
    shutil.copytree(study, root, ignore=shutil.ignore_patterns("report"))
    shutil.rmtree(root / FOLDERS[1])
    return root


def test_a_slurm_study_submits_its_unfinished_models_with_the_presets_parameters(
    study, in_models_dir, monkeypatch, tmp_path
):
    submissions = Submissions()
    monkeypatch.setattr(study_module, "launch", submissions)
    root = half_finished(study, tmp_path)
    main([*STUDY, "cluster=slurm", "hydra.launcher.partition=X", "--out", str(root)])
    ((executor, jobs, overrides, force),) = submissions.calls
    assert jobs == [StudyJob(f"{CNN}@b.pt", model_source(CNN), Path("b.pt"), root / FOLDERS[1])]
    assert (overrides, force) == (OVERRIDES, False)  # the launcher's overrides left out
    parameters = executor._executor.parameters
    assert (parameters["partition"], parameters["job_name"], parameters["mem"]) == (
        "X", "advflat-eval", "4GB"
    )  # fmt: skip
    assert executor._executor.max_num_timeout == 3  # the slurm preset's, an init argument
    assert executor.folder == (root / ".submitit" / "%j").absolute()
    sbatch = executor._executor._make_submission_file_text("command", "uid")
    assert "#SBATCH --partition=X\n" in sbatch and "#SBATCH --time=1440\n" in sbatch


def test_a_finished_study_submits_nothing(study, in_models_dir, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    submissions = Submissions()
    monkeypatch.setattr(study_module, "launch", submissions)
    main([*STUDY, "cluster=local", "--out", str(study)])
    assert [jobs for _, jobs, _, _ in submissions.calls] == [[]]
    assert caplog.text.count("already evaluated (use --force to redo)") == 3


def test_a_study_with_failed_jobs_names_them_with_their_logs_and_exits_1(
    study, in_models_dir, monkeypatch, caplog, tmp_path
):
    failure = Failure(f"{CNN}@b.pt", "ValueError: boom", "run", ["job.err", "job.out"], 0.0)
    monkeypatch.setattr(study_module, "launch", Submissions([failure]))
    root = half_finished(study, tmp_path)
    with pytest.raises(SystemExit) as exited:
        main([*STUDY, "cluster=local", "--out", str(root)])
    assert exited.value.code == 1
    assert f"1 job(s) of this sweep failed:\n  - {CNN}@b.pt: ValueError: boom\n" in caplog.text
    assert "      log: job.err\n      log: job.out\n" in caplog.text


def test_a_failing_study_job_records_its_failure_and_returns_it(in_models_dir):
    job = StudyJob(f"{CNN}@a.pt", model_source(CNN), Path("a.pt"), in_models_dir / "failing")
    failure = run_job(job, [*OVERRIDES, "evaluation.nope=1"], force=False)
    assert isinstance(failure, Failure) and failure.overrides == f"{CNN}@a.pt"
    recorded = json.loads((job.folder / FAILURE_FILE).read_text())
    assert recorded["error"] == failure.error and recorded["run_dir"] == str(job.folder)
    assert not (job.folder / "metrics.json").exists()


TWO = ["-m", "--model", f"{CNN}@a.pt,{LINEAR}@c.pt", *OVERRIDES]


def check_jobs_match_the_in_process_study(root, study):
    """The jobs' folders hold the same evaluation as the in-process study's (up to float
    rounding: a job may use another number of math threads)."""
    for folder in (FOLDERS[0], FOLDERS[2]):
        config = json.loads((root / folder / "config.json").read_text())
        assert config == json.loads((study / folder / "config.json").read_text())
        in_job = without_costs(json.loads((root / folder / "metrics.json").read_text()))
        in_study = without_costs(json.loads((study / folder / "metrics.json").read_text()))
        assert in_job == pytest.approx(in_study, rel=1e-4, abs=1e-6)
    return job_folders(root)


def job_folders(root):
    """The study's job folders, named by job id ("12" locally, "12_0" in a SLURM array), each
    holding its job's logs: one per model."""
    folders = sorted(log.parent.name for log in (root / ".submitit").glob("*/*_log.err"))
    assert len(folders) == 2 and all(re.fullmatch(r"\d+(_\d+)?", f) for f in folders), folders
    return folders


@pytest.mark.slow
def test_a_local_cluster_study_runs_each_model_as_a_submitit_job(study, in_models_dir, tmp_path):
    root = tmp_path / "local"
    main([*TWO, "cluster=local", "hydra.launcher.timeout_min=10", "--out", str(root)])
    check_jobs_match_the_in_process_study(root, study)
