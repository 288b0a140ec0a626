"""Where a study of external models runs: one submitit job per model, through ``cluster=``.

``advflat-eval -m --model ... cluster=local|slurm [hydra.launcher.KEY=VALUE ...]`` takes the
``cluster=`` presets that training sweeps use: advflat's config is composed with those overrides
alone (``hydra.launcher`` is all that is read of it), the submitit launcher it names is built
from that node as Hydra builds it, and its keys become a submitit executor's parameters the way
that launcher maps them. Each model is one task of one job array (``executor.map_array``) with
submitit's logs and pickles in ``ROOT/.submitit/<job id>``; this process waits for them all.

A job unpickles the function and its arguments in a fresh Python started in the submitting
command's folder (submitit's local processes inherit it; ``sbatch`` starts there), so relative
weights paths and the user's ``MODULE:FACTORY`` module (imported from the current folder,
``advflat.models.factory``) resolve as they do in this process. A job that fails writes
``failure.json`` into its run folder and logs why, as a sweep's jobs do
(``advflat.runs.failed_jobs``); the others go on, and the failed ones are named with their logs
at the end (exit status 1). ``cluster=basic``, the default, names no submitit launcher: the
models are then evaluated in this process, one after another.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from hydra.utils import get_class
from hydra_plugins.hydra_submitit_launcher.config import (  # type: ignore[import-untyped]
    BaseQueueConf,
)
from omegaconf import OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException
from submitit.core.utils import FailedSubmissionError, UncompletedJobError

from advflat.cli.evaluate_weights import evaluate_weights
from advflat.cli.paths import CONFIG_DIR, CONFIG_NAME
from advflat.core.errors import ConfigError
from advflat.models.factory import ModelSource
from advflat.runs.failed_jobs import Failure, forget_failure, one_line, record_failure

log = logging.getLogger("advflat.eval")
JOB_NAME = "advflat-eval"  # the presets' job name is ${hydra.job.name}: sbatch --job-name
# The launcher's keys that its executor takes when it is built, not as parameters (the plugin's
# own split, in BaseSubmititLauncher.launch).
INIT_KEYS = ("max_num_timeout",)
FOLDER_KEY = "submitit_folder"
# The class every submitit launcher derives from. Hydra's plugin scan loads the plugin's modules
# afresh when it first composes, so the class is looked up after composing: one imported before
# would be another class object.
SUBMITIT_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.BaseSubmititLauncher"


@dataclass(frozen=True)
class StudyJob:
    """One model's evaluation as its job runs it: ``evaluate_weights``' arguments, and the
    ``SOURCE@WEIGHTS`` it was given as."""

    label: str
    source: ModelSource
    weights: Path
    folder: Path


def submitit_launcher(overrides: list[str], root: Path) -> Any:
    """The submitit launcher (a ``BaseSubmititLauncher``) the ``cluster=``/``hydra.launcher``
    overrides choose, its ``submitit_folder`` below ``root``; None when they choose none (the
    plain launcher)."""
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            config = compose(CONFIG_NAME, overrides=overrides, return_hydra_config=True)
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.sweep.dir = str(root)  # the presets' submitit_folder is below it
            config.hydra.job.name = JOB_NAME
        params = OmegaConf.to_container(config.hydra.launcher, resolve=True)
    except (HydraException, OmegaConfBaseException) as error:
        first = str(error).strip().splitlines()[0]
        raise ConfigError(f"-m --model: {' '.join(overrides)}: {first}") from None
    assert isinstance(params, dict)
    launcher = get_class(str(params.pop("_target_")))
    if not issubclass(launcher, get_class(SUBMITIT_LAUNCHER)):
        return None
    return launcher(**{str(key): value for key, value in params.items()})


def executor_of(launcher: Any) -> Any:
    """The submitit executor ``launcher`` would submit a sweep's jobs with.

    The plugin maps its keys inside ``launch`` and exposes no function for it, so the mapping
    is repeated here: ``submitit_folder`` is the folder, the init keys and every key that is
    not common to all executors get the executor's prefix (``slurm_partition``).
    """
    kind = launcher._EXECUTOR
    params = {key: value for key, value in launcher.params.items() if key != FOLDER_KEY}
    init = {f"{kind}_{key}": params.pop(key) for key in INIT_KEYS if key in params}
    executor = submitit.AutoExecutor(folder=launcher.params[FOLDER_KEY], cluster=kind, **init)
    common = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(
        **{key if key in common else f"{kind}_{key}": value for key, value in params.items()}
    )
    return executor


def run_job(job: StudyJob, overrides: list[str], force: bool) -> dict[str, float] | Failure:
    """One model's evaluation inside its job: its metrics, or why it failed (also written to
    the run folder's failure.json and logged, with a traceback unless it was the config)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # into submitit's job log
    job.folder.mkdir(parents=True, exist_ok=True)
    forget_failure(job.folder)
    try:
        return evaluate_weights(job.source, job.weights, overrides, job.folder, force)
    except Exception as error:  # one model's failure must not end the others
        return record_failure(job.folder, job.label, error)


def launch(
    executor: Any, jobs: list[StudyJob], overrides: list[str], force: bool
) -> tuple[dict[Path, dict[str, float]], list[Failure]]:
    """Submit ``jobs`` as one array, wait for every one; their metrics and their failures."""
    if not jobs:
        return {}, []
    count = len(jobs)
    try:
        submitted = executor.map_array(run_job, jobs, [overrides] * count, [force] * count)
    except FailedSubmissionError as error:
        message = f"-m --model: submitting the study's jobs failed: {one_line(error)}"
        raise ConfigError(message) from None
    for job, handle in zip(jobs, submitted, strict=True):
        log.info("job %s: %s → %s", handle.job_id, job.label, job.folder)
    try:
        outcomes = [outcome(job, handle) for job, handle in zip(jobs, submitted, strict=True)]
    except KeyboardInterrupt:  # leave no job behind; the same command resumes the study
        for handle in submitted:
            handle.cancel(check=False)
        raise
    results = {j.folder: o for j, o in zip(jobs, outcomes, strict=True) if isinstance(o, dict)}
    return results, [o for o in outcomes if isinstance(o, Failure)]


def outcome(job: StudyJob, handle: submitit.Job) -> dict[str, float] | Failure:
    """What the job returned, once it ended; a job that ended without returning (killed, out
    of time or memory) is a failure too, found in submitit's logs."""
    try:
        returned: dict[str, float] | Failure = handle.result()
    except UncompletedJobError as error:
        logs = [str(handle.paths.stderr), str(handle.paths.stdout)]
        return Failure(job.label, one_line(error), str(job.folder), logs, time.time())
    return returned
