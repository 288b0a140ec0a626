"""`advflat-eval -m --model ... cluster=slurm` on the local one-node cluster: a 2-model study of
weights advflat did not train, one SLURM array task per model, each holding the same evaluation
as the in-process study's; the same command again submits nothing.

Needs `bash scripts/slurm_local.sh start`; skips when the cluster is not up (fails in CI). Run with
`pytest -m slurm`.
"""

from __future__ import annotations

import logging

import pytest

from advflat.cli.evaluate import main
from tests.test_external_study import (  # noqa: F401  (fixtures)
    TWO,
    check_jobs_match_the_in_process_study,
    models_dir,
    study,
)
from tests.test_slurm_cluster import require_cluster

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(600)]
ON_SLURM = ["cluster=slurm", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"]


@pytest.fixture(scope="module")
def cluster() -> None:
    require_cluster()


@pytest.mark.usefixtures("cluster")
def test_a_slurm_study_runs_each_model_as_an_array_task_and_resumes(
    study,  # noqa: F811
    in_models_dir,  # noqa: F811
    tmp_path,
    caplog,
):
    root = tmp_path / "slurm"
    main([*TWO, *ON_SLURM, "--out", str(root)])
    folders = check_jobs_match_the_in_process_study(root, study)
    assert len({folder.split("_")[0] for folder in folders}) == 1  # tasks of one array
    caplog.set_level(logging.INFO)
    main([*TWO, *ON_SLURM, "--out", str(root)])
    assert "0 of 2 models to evaluate in jobs" in caplog.text
