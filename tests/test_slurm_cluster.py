"""The `cluster=` presets compose into working launchers, and the local SLURM cluster runs jobs.

The unmarked tests need nothing but Hydra. The `slurm` tests need the one-node cluster of
`bash scripts/slurm_local.sh start` and skip when it is not up, except in CI (CI=true), where
they fail instead; run them with `pytest -m slurm`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import submitit
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from tests.conftest import CONF

PRESETS = sorted(p.stem for p in (CONF / "cluster").glob("*.yaml"))
LAUNCHERS = {
    "basic": "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
    "local": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
    "slurm": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
}
# A stand-in for conf/config.yaml: the presets only touch hydra.launcher, which reads the sweep dir.
PRIMARY = """\
defaults:
  - cluster: basic
  - _self_
x: 0
hydra:
  sweep:
    dir: outputs/sweeps/test
"""
TIMEOUT_S = 180


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A config dir holding a copy of conf/cluster and a minimal primary config."""
    shutil.copytree(CONF / "cluster", tmp_path / "cluster")
    (tmp_path / "config.yaml").write_text(PRIMARY)
    return tmp_path


def compose_launcher(config_dir: Path, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    return cfg.hydra.launcher


def build_launcher(node: DictConfig) -> object:
    """The launcher Hydra would build from the node: every interpolation resolved, nothing run."""
    params = OmegaConf.to_container(node, resolve=True)
    return get_class(params.pop("_target_"))(**params)


def test_basic_local_and_slurm_presets_exist():
    assert set(LAUNCHERS) <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_cluster_preset_composes_and_instantiates_its_launcher(preset, config_dir):
    launcher = compose_launcher(config_dir, [f"cluster={preset}"])
    assert launcher._target_ == LAUNCHERS.get(preset, launcher._target_)
    built = build_launcher(launcher)
    folder = getattr(built, "params", {}).get("submitit_folder")
    if folder is not None:  # submitit's logs and pickles live inside the sweep directory
        assert folder.startswith("outputs/sweeps/test/")


def test_default_cluster_is_the_plain_launcher(config_dir):
    assert compose_launcher(config_dir, [])._target_ == LAUNCHERS["basic"]


def test_slurm_preset_takes_partition_and_account_from_environment(config_dir, monkeypatch):
    monkeypatch.delenv("ADVFLAT_SLURM_PARTITION", raising=False)
    monkeypatch.delenv("ADVFLAT_SLURM_ACCOUNT", raising=False)
    params = build_launcher(compose_launcher(config_dir, ["cluster=slurm"])).params
    assert (params["partition"], params["account"]) == ("debug", None)

    monkeypatch.setenv("ADVFLAT_SLURM_PARTITION", "gpu")
    monkeypatch.setenv("ADVFLAT_SLURM_ACCOUNT", "robustness")
    params = build_launcher(compose_launcher(config_dir, ["cluster=slurm"])).params
    assert (params["partition"], params["account"]) == ("gpu", "robustness")


def test_slurm_preset_options_reach_the_launcher(config_dir):
    overrides = {
        "partition": "gpu",
        "account": "robustness",
        "qos": "high",
        "gpus_per_node": 4,
        "cpus_per_task": 8,
        "mem_gb": 64,
        "timeout_min": 30,
        "array_parallelism": 5,
        "max_num_timeout": 7,
        "setup": ["module load cuda", "echo ready"],
    }
    cli = [f"hydra.launcher.{k}={v}" for k, v in overrides.items() if k != "setup"]
    cli.append("hydra.launcher.setup=['module load cuda','echo ready']")
    params = build_launcher(compose_launcher(config_dir, ["cluster=slurm", *cli])).params
    assert {k: params[k] for k in overrides} == overrides


# ---------------------------------------------------------------- the local SLURM cluster


def run(args: list[str], timeout: float = 30, **kwargs) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, args, done.stdout, done.stderr[-2000:])
    return done.stdout.strip()


def slurm(*args: str, timeout: float = 30) -> str:
    return run(list(args), timeout=timeout)


HINT = "start it with `bash scripts/slurm_local.sh start`"
USABLE = {"idle", "mixed", "allocated", "completing"}


def cluster_problem() -> str | None:
    """Why the local SLURM cluster cannot run jobs, or None when it can."""
    if shutil.which("sinfo") is None:
        return "sinfo not found"
    try:
        states = slurm("sinfo", "-h", "-o", "%T").split()
    except (subprocess.SubprocessError, OSError) as error:
        return f"the cluster is down ({(getattr(error, 'stderr', None) or str(error)).strip()})"
    if not set(states) & USABLE:
        return f"no usable SLURM node (states {states})"
    return None


def require_cluster() -> None:
    """Skip without a healthy cluster; in CI (CI=true) fail instead, so green means they ran."""
    problem = cluster_problem()
    if problem is None:
        return
    message = f"{problem}: {HINT}"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI needs the SLURM cluster, but {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def cluster() -> None:
    require_cluster()


IN_PROGRESS = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "SUSPENDED"}


def final_states(job_id: str, tasks: int = 1) -> list[str]:
    """The job's `sacct` states, one per array task, once all tasks are recorded and done: the
    accounting that submitit reads for its job states (it reaches slurmdbd a little late)."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        states = slurm("sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id).split()
        if len(states) == tasks and not set(states) & IN_PROGRESS:
            return states
        assert time.monotonic() < deadline, f"job {job_id} still {states} after {TIMEOUT_S} s"
        time.sleep(0.5)


@pytest.mark.slurm
@pytest.mark.usefixtures("cluster")
def test_sbatch_runs_a_job_to_completion(tmp_path):
    out = tmp_path / "job.out"
    job_id = slurm("sbatch", "--parsable", "-o", str(out), "--wrap", "echo ran $SLURM_JOB_ID")
    assert final_states(job_id) == ["COMPLETED"]
    assert out.read_text().strip() == f"ran {job_id}"


@pytest.mark.slurm
@pytest.mark.usefixtures("cluster")
def test_job_array_runs_every_task(tmp_path):
    out = str(tmp_path / "task_%a.out")
    job_id = slurm(
        "sbatch", "--parsable", "--array=0-2", "-o", out, "--wrap", "echo $SLURM_ARRAY_TASK_ID"
    )
    assert final_states(job_id, tasks=3) == ["COMPLETED"] * 3
    assert [(tmp_path / f"task_{i}.out").read_text().strip() for i in range(3)] == ["0", "1", "2"]


@pytest.mark.slurm
@pytest.mark.usefixtures("cluster")
def test_requeued_running_job_starts_again(tmp_path):
    out = tmp_path / "job.out"
    # The first run waits to be requeued; the second (SLURM_RESTART_COUNT=1) finishes at once.
    script = (
        'echo "run ${SLURM_RESTART_COUNT:-0}"; [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ] || sleep 120'
    )
    job_id = slurm("sbatch", "--parsable", "--open-mode=append", "-o", str(out), "--wrap", script)
    deadline = time.monotonic() + TIMEOUT_S
    while not (out.exists() and "run 0" in out.read_text()):
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.5)
    slurm("scontrol", "requeue", job_id)
    assert final_states(job_id) == ["COMPLETED"]
    runs = [line for line in out.read_text().splitlines() if line.startswith("run ")]
    assert runs == ["run 0", "run 1"]


def wait_done(job: submitit.Job, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not job.done():
        if time.monotonic() > deadline:
            job.cancel(check=False)
            pytest.fail(f"submitit job {job.job_id} did not finish in {timeout_s} s")
        time.sleep(0.5)


@pytest.mark.slurm
@pytest.mark.usefixtures("cluster")
def test_submitit_slurm_executor_returns_function_result(tmp_path):
    executor = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    executor.update_parameters(slurm_partition="debug", timeout_min=5, cpus_per_task=1, mem_gb=1)
    job = executor.submit(os.getenv, "SLURM_JOB_ID")  # runs inside the SLURM job
    wait_done(job)
    assert job.result() == job.job_id
    assert final_states(job.job_id) == ["COMPLETED"]
    assert job.get_info(mode="force").get("State") == "COMPLETED"  # submitit reads sacct


@pytest.mark.slurm
@pytest.mark.usefixtures("cluster")
def test_hydra_multirun_through_the_slurm_preset(config_dir):
    app = config_dir / "app.py"
    app.write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADVFLAT_SLURM_")}
    env["OMP_NUM_THREADS"] = "7"  # the preset's setup line sets it to the job's CPU count
    args = [sys.executable, str(app), "-m", "cluster=slurm", "x=1,2,3", "hydra.launcher.mem_gb=1"]
    run(args, timeout=TIMEOUT_S, cwd=config_dir, env=env)
    sweep = config_dir / "outputs" / "sweeps" / "test"
    results = [json.loads((sweep / str(i) / "result.json").read_text()) for i in range(3)]
    assert [r["x"] for r in results] == [1, 2, 3]
    assert all(r["slurm_job_id"] for r in results)  # each job ran under SLURM
    assert all(r["omp_num_threads"] == "1" for r in results)  # cpus_per_task=1 via setup


APP = textwrap.dedent(
    """\
    import json
    import os
    from pathlib import Path

    import hydra
    from hydra.core.hydra_config import HydraConfig


    @hydra.main(config_path=".", config_name="config", version_base="1.3")
    def main(cfg):
        result = {
            "x": cfg.x,
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        }
        Path(HydraConfig.get().runtime.output_dir, "result.json").write_text(json.dumps(result))


    if __name__ == "__main__":
        main()
    """
)
