"""`advflat -m cluster=slurm ...` on the local one-node cluster: a 3-job digits sweep and its
table, a re-launch of a half-finished sweep, a preempted job that is requeued and resumes, and a
failed job reported with its logs.

Needs `bash scripts/slurm_local.sh start`; skips when the cluster is not up (fails in CI). Run with
`pytest -m slurm`. The sweep (3 seeds, 8 short epochs) is run once for the module.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_slurm_cluster import require_cluster, slurm
from tests.test_sweeps import (
    FAILING,
    LOG,
    check_failed_sweep,
    job_dir,
    multirun,
    multirun_command,
    stamps,
)

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]

EPOCHS = 8  # long enough (~0.7 s each) to signal a job between its first and last epoch
ON_SLURM = ["cluster=slurm", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=20"]
SWEEP = [
    "experiment=quickstart",
    "evaluation=quick",
    "dataset.train_first=300",
    "dataset.test_first=100",
    f"trainer.epochs={EPOCHS}",
    *ON_SLURM,
]
SEEDS = "seed=0,1,2"
WAIT_S = 420


@pytest.fixture(scope="module")
def cluster() -> None:
    require_cluster()


def job_ids(sweep: Path) -> list[str]:
    """SLURM ids of the sweep's jobs, from submitit's folders: "12_0", "12_1", ... for an array,
    "12" for a single job."""
    names = [p.name for p in (sweep / ".submitit").iterdir() if re.fullmatch(r"\d+(_\d+)?", p.name)]
    tasks = sorted(n for n in names if "_" in n)
    return tasks or names


def cancel(sweep: Path) -> None:
    """Leave no job behind when a test is interrupted. Only then: a sweep that returned has
    collected every result, and cancelling a job that is still completing marks it CANCELLED."""
    if (sweep / ".submitit").exists():
        for array in {job.split("_")[0] for job in job_ids(sweep)}:  # pending tasks too
            subprocess.run(["scancel", array], capture_output=True, timeout=30)


def run_sweep(*overrides: str, sweep: Path) -> subprocess.CompletedProcess:
    try:
        return multirun(*overrides, sweep=sweep)
    except BaseException:  # a timeout, or Ctrl-C
        cancel(sweep)
        raise


def accounting(job: str, want: str = "COMPLETED") -> list[str]:
    """The job's states in `sacct` (every run of it, requeued ones included), once the last is
    ``want``: accounting reaches slurmdbd a moment after the job ends."""
    deadline = time.monotonic() + 60
    while True:
        states = slurm("sacct", "-n", "-X", "-D", "-P", "-o", "State", "-j", job).split()
        if states and states[-1] == want:
            return states
        assert time.monotonic() < deadline, f"job {job}: {states}"
        time.sleep(0.5)


def metrics_of(run: Path) -> dict[str, float]:
    """The run's metrics without the wall-clock ``cost/`` entries (they vary between runs)."""
    metrics = json.loads((run / "metrics.json").read_text())
    return {key: value for key, value in metrics.items() if not key.startswith("cost/")}


@pytest.fixture(scope="module")
def sweep(cluster, tmp_path_factory) -> Path:
    """`advflat -m cluster=slurm ... seed=0,1,2`: three sbatch jobs (one job array)."""
    sweep = tmp_path_factory.mktemp("slurm") / "sweep"
    result = run_sweep(*SWEEP, SEEDS, sweep=sweep)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return sweep


def test_sweep_runs_each_job_as_a_slurm_job_with_its_metrics(sweep):
    jobs = job_ids(sweep)
    assert len(jobs) == 3 and len({job.split("_")[0] for job in jobs}) == 1  # one job array
    for job in jobs:
        assert accounting(job) == ["COMPLETED"]
    for seed in range(3):
        metrics = metrics_of(job_dir(sweep, f"seed={seed}"))
        for key in ["test/clean_error", "test/robust_error/pgd", "train/robust_error/pgd"]:
            assert 0.0 <= metrics[key] <= 1.0, (seed, key)
        assert metrics["robust_generalization_gap/pgd"] == pytest.approx(
            metrics["test/robust_loss/pgd"] - metrics["train/robust_loss/pgd"]
        )
    # Different seeds train different models.
    errors = {metrics_of(job_dir(sweep, f"seed={s}"))["test/robust_loss/pgd"] for s in range(3)}
    assert len(errors) == 3


def test_report_aggregates_the_sweep_over_seeds(sweep, tmp_path):
    report = Path(sys.executable).with_name("advflat-report")
    out = tmp_path / "report"
    done = subprocess.run(
        [str(report), str(sweep), "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    with (out / "table.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))  # one setting: the seeds are its repetitions
    assert int(row["n_seeds"]) == 3
    for key in ["test/robust_error/pgd", "test/robust_loss/pgd"]:
        values = [metrics_of(job_dir(sweep, f"seed={s}"))[key] for s in range(3)]
        assert float(row[key]) == pytest.approx(statistics.fmean(values))
        assert float(row[f"{key} std"]) == pytest.approx(statistics.stdev(values))
    assert "± " in (out / "table.md").read_text()
    assert len(list((out / "over_epochs").glob("*.png"))) == 1  # one method, averaged over seeds


def test_relaunched_slurm_sweep_skips_finished_jobs_and_completes_the_rest(sweep, tmp_path):
    # A copy of the finished sweep whose seed=1 job died after its last checkpoint.
    half = tmp_path / "half"
    shutil.copytree(sweep, half, ignore=shutil.ignore_patterns(".submitit"))
    finished = [job_dir(half, f"seed={s}") for s in (0, 2)]
    unfinished = job_dir(half, "seed=1")
    before = {run: stamps(run) for run in finished}
    (unfinished / "metrics.json").unlink()
    result = run_sweep(*SWEEP, SEEDS, sweep=half)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for run in finished:
        assert stamps(run) == before[run], f"{run.name} was run again"
        assert "already finished with this config: skipped" in (run / LOG).read_text()
    assert metrics_of(unfinished) == metrics_of(job_dir(sweep, "seed=1"))


def wait_for_first_checkpoint(sweep: Path, process: subprocess.Popen) -> Path:
    deadline = time.monotonic() + WAIT_S
    while not (found := list(sweep.glob("*/checkpoints/last.pt"))):
        assert process.poll() is None, "the sweep ended before its job wrote a checkpoint"
        assert time.monotonic() < deadline, f"no checkpoint after {WAIT_S} s"
        time.sleep(0.05)
    return found[0].parents[1]


def test_preempted_job_is_requeued_and_resumes_to_the_uninterrupted_metrics(sweep, tmp_path):
    preempted = tmp_path / "preempted"
    log = (tmp_path / "advflat.log").open("w")
    command = multirun_command(*SWEEP, "seed=0", sweep=preempted)
    process = subprocess.Popen(**command, stdout=log, stderr=subprocess.STDOUT)
    try:
        run = wait_for_first_checkpoint(preempted, process)
        (job,) = job_ids(preempted)
        # What SLURM sends before a time limit or a preemption (sbatch --signal=USR2@...).
        slurm("scancel", "--signal=USR2", job)
        assert process.wait(timeout=WAIT_S) == 0, (tmp_path / "advflat.log").read_text()[-3000:]
    finally:
        log.close()
        if process.poll() is None:
            process.kill()
            process.wait()
            cancel(preempted)
    assert accounting(job) == ["REQUEUED", "COMPLETED"]
    resumed = re.search(r"resuming from (\S+) after epoch (\d+)", (run / LOG).read_text())
    assert resumed, "the requeued job did not resume from its checkpoint"
    assert Path(resumed[1]) == run / "checkpoints" / "last.pt"  # in the same run directory
    assert 1 <= int(resumed[2]) < EPOCHS, "the signal arrived after training"
    assert metrics_of(run) == metrics_of(job_dir(sweep, "seed=0"))


def test_failed_job_on_slurm_is_reported_with_its_logs_and_the_sweep_goes_on(cluster, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_sweep(*FAILING, *ON_SLURM, sweep=sweep)
    failure = check_failed_sweep(result, sweep)
    submitit_logs = [Path(p) for p in failure["logs"][1:]]
    assert [p.suffix for p in submitit_logs] == [".err", ".out"]
    assert all(p.is_relative_to(sweep / ".submitit") and p.exists() for p in submitit_logs)
