"""Data-parallel training (advflat.training.distributed): the launch environment is read right,
and two gloo processes on the CPU train exactly like one process on the same global batch.

The models here have no BatchNorm on purpose: under DDP each rank normalises with its own
share's statistics (SyncBatchNorm needs CUDA), so a BN model's steps would differ from one
process by design, not by a bug. Attacks use a zero start, so they are deterministic too.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from hydra import compose, initialize_config_dir
from submitit.helpers import TorchDistributedEnvironment

from advflat.attacks.pgd import PGD
from advflat.core.errors import ConfigError
from advflat.core.io import save_json
from advflat.data import CropFlip
from advflat.data.base import ImageData
from advflat.models import MLP
from advflat.runs.pipeline import run_experiment
from advflat.training.distributed import (
    Distributed,
    DistributedOptions,
    Launch,
    detect_launch,
    job_port,
)
from advflat.training.run_directory import RunDirectory
from advflat.training.schedules import MultiStep
from advflat.training.updates import OptimizerStep, Update
from tests.conftest import CONF, blobs
from tests.setups import (
    adversarial_weights,
    at_loss,
    awp_update,
    entropy_update,
    mart_loss,
    random_weights,
    trades_loss,
    trainer,
)

WORLD = 2


# ---- the launch environment ----------------------------------------------------------------
@pytest.fixture
def clean_env(monkeypatch):
    """No launcher variables from the machine running the tests."""
    for key in list(os.environ):
        if key.startswith(("SLURM_", "SUBMITIT_")) or key in {
            "RANK",
            "WORLD_SIZE",
            "LOCAL_RANK",
            "MASTER_ADDR",
            "MASTER_PORT",
        }:
            monkeypatch.delenv(key)
    return monkeypatch


def test_a_plain_process_is_a_world_of_one(clean_env):
    assert detect_launch() == Launch()


def test_torchrun_variables_give_rank_world_and_master(clean_env):
    for key, value in {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "node7",
        "MASTER_PORT": "29999",
    }.items():
        clean_env.setenv(key, value)
    assert detect_launch() == Launch(
        rank=3,
        world_size=4,
        local_rank=1,
        master_addr="node7",
        master_port=29999,
        source="torchrun",
    )


SLURM_TASK = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_NODEID": "1",
    "SLURM_JOB_NODELIST": "gpu[07-08]",
    "SLURM_PROCID": "3",
    "SLURM_LOCALID": "1",
    "SLURM_NTASKS": "4",
}


def test_submitit_slurm_tasks_agree_with_submitits_own_torch_environment(clean_env):
    for key, value in {**SLURM_TASK, "SUBMITIT_EXECUTOR": "slurm"}.items():
        clean_env.setenv(key, value)
    launch = detect_launch()
    theirs = TorchDistributedEnvironment()
    assert (launch.rank, launch.world_size, launch.local_rank) == (3, 4, 1)
    assert (launch.master_addr, launch.master_port) == (theirs.master_addr, theirs.master_port)
    assert launch.master_addr == "gpu07"  # the first host of the node list
    assert launch.master_port == job_port("4242")


def test_srun_step_without_submitit_reads_the_step_and_the_node_list(clean_env):
    for key, value in {**SLURM_TASK, "SLURM_STEP_NUM_TASKS": "4"}.items():
        clean_env.setenv(key, value)
    launch = detect_launch()
    assert (launch.rank, launch.world_size, launch.local_rank) == (3, 4, 1)
    assert (launch.master_addr, launch.master_port) == ("gpu07", job_port("4242"))
    clean_env.setenv("MASTER_PORT", "12345")  # an explicit master wins
    assert detect_launch().master_port == 12345


def test_a_batch_script_running_python_directly_is_one_process(clean_env):
    for key, value in {**SLURM_TASK, "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}.items():
        clean_env.setenv(key, value)  # --ntasks=4 but no srun: nobody else will join
    assert detect_launch().world_size == 1


def test_submitit_single_task_job_starts_no_process_group(clean_env):
    for key, value in {
        "SUBMITIT_EXECUTOR": "local",
        "SUBMITIT_LOCAL_JOB_ID": "17",
        "SUBMITIT_LOCAL_NTASKS": "1",
        "SUBMITIT_LOCAL_JOB_NUM_NODES": "1",
        "SUBMITIT_LOCAL_NODEID": "0",
        "SUBMITIT_LOCAL_GLOBALID": "0",
        "SUBMITIT_LOCAL_LOCALID": "0",
    }.items():
        clean_env.setenv(key, value)
    distributed = DistributedOptions().start(torch.device("cpu"))
    assert (distributed.world_size, distributed.is_main) == (1, True)
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize(
    ("options", "device", "message"),
    [
        ({}, torch.device("cuda", 1), "device=cuda:1 pins one GPU"),
        ({"sync_batchnorm": True}, torch.device("cpu"), "sync_batchnorm needs CUDA"),
        ({"backend": "nccl"}, torch.device("cpu"), "backend=nccl needs CUDA"),
    ],
)
def test_impossible_multi_process_setups_are_config_errors(options, device, message):
    launch = Launch(rank=0, world_size=2)
    with pytest.raises(ConfigError, match=message):
        DistributedOptions(**options).start(device, launch)


def test_the_global_batch_must_split_evenly_over_the_ranks(tiny_data, tiny_net):
    method = trainer(batch_size=30, optimizer=sgd)
    four = Distributed(device=torch.device("cpu"), rank=0, world_size=4)
    with pytest.raises(ConfigError, match=r"batch_size \(30\) .* over the job's 4 processes"):
        method.prepare(tiny_net, tiny_data, 0, four)


def test_shards_are_contiguous_and_cover_the_global_batch():
    x = torch.arange(12.0).view(6, 2)
    shards = [Distributed(device="cpu", rank=r, world_size=3).shard(x)[0] for r in range(3)]
    assert [len(s) for s in shards] == [2, 2, 2]
    assert torch.equal(torch.cat(shards), x)


# ---- two gloo processes against one ----------------------------------------------------------
def sgd(params):
    return torch.optim.SGD(params, lr=0.2, momentum=0.9)


class Recorded(Update):
    """Wraps an update rule: keeps each step's training loss over this rank's share."""

    def __init__(self, inner: Update, recorded: str = "robust_loss") -> None:
        self.inner, self.recorded = inner, recorded
        self.losses: list[torch.Tensor] = []
        self.data_parallel = inner.data_parallel
        self.passes_per_epoch = inner.passes_per_epoch

    def attach(self, weight_attack):
        self.inner.attach(weight_attack)

    def prepare(self):
        self.inner.prepare()

    def steps(self, batches):
        return self.inner.steps(batches)

    def step(self, ctx, loss, model, x, y):
        stats = self.inner.step(ctx, loss, model, x, y)
        self.losses.append(stats[self.recorded].detach().clone())
        return stats


def recorded(update: Update, recorded: str = "robust_loss") -> Recorded:
    return Recorded(update, recorded)


# TRADES' attack starts at its own minimum (KL = 0 at x' = x): a signed step there follows the
# sign of rounding noise, which differs between batch shapes. Raw-gradient steps stay exact.
def trades_attack() -> PGD:
    return PGD(epsilon=0.1, step_size=0.05, steps=2, init="zero", normalized=False, restarts=1)


# Every loss × update pair the methods compose: the collectives live in the trainer and the
# update rules' context, whatever the loss. Rank 0 draws from the single process's RNG stream, so
# the weight-space randomness that rank 0 shares (AWP's ν₀, Entropy-SGD's Langevin noise) is the
# single process's too.
METHODS = {
    "normal": lambda: {"update": recorded(OptimizerStep(), "clean_loss")},
    "adversarial": lambda: {
        "loss": at_loss(),
        "update": recorded(OptimizerStep()),
        "ema_decay": 0.9,
    },
    "trades": lambda: {
        "loss": trades_loss(),
        "update": recorded(OptimizerStep()),
        "attack": trades_attack(),
    },
    "awp": lambda: {  # the curriculum's loss is reduced as well
        "loss": at_loss(),
        "update": recorded(awp_update(curriculum=100.0)),
        "weight_attack": adversarial_weights(xi=0.01),
    },
    "trades_awp": lambda: {
        "loss": trades_loss(),
        "update": recorded(awp_update()),
        "weight_attack": adversarial_weights(xi=0.01),
        "attack": trades_attack(),
    },
    "mart_rwp": lambda: {
        "loss": mart_loss(),
        "update": recorded(awp_update()),
        "weight_attack": random_weights(xi=0.02),
    },
    "entropy_sgd": lambda: {"loss": at_loss(), "update": recorded(entropy_update(inner_steps=2))},
    "trades_entropy_sgd": lambda: {
        "loss": trades_loss(),
        "update": recorded(entropy_update(inner_steps=2)),
        "attack": trades_attack(),
    },
}


def train(path: Path, name: str, distributed: Distributed | None = None) -> dict:
    """3 steps per epoch (96 images, global batch 32), 2 epochs, with crop/flip augmentation."""
    generator = torch.Generator().manual_seed(0)
    data = ImageData(blobs(96, generator), blobs(48, generator), 3, CropFlip(padding=1))
    options = METHODS[name]()
    torch.manual_seed(0)
    model = MLP(num_classes=3, input_shape=[1, 4, 4], hidden=[16])  # no BatchNorm
    method = trainer(
        **{
            "epochs": 2,
            "batch_size": 32,
            "optimizer": sgd,
            "scheduler": MultiStep(milestones=[1], gamma=0.1),
            "snapshot_every": 0,
            "test_batches": 1,
            "attack": PGD(epsilon=0.1, step_size=0.05, steps=2, init="zero", restarts=1),
            **options,
        }
    )
    run = RunDirectory(path, seed=0)
    try:
        final = method.fit(model, data, run, distributed)
    finally:
        run.close()
    return {"losses": torch.stack(method.update.losses), "state": final.state_dict()}


def pipeline_config():
    overrides = [
        "dataset=digits",
        "dataset.train_first=128",
        "dataset.test_first=64",
        "model=mlp",
        "model.hidden=[16]",
        "trainer=adversarial",
        "trainer.epochs=1",
        "trainer.scheduler.milestones=[]",
        "trainer.batch_size=32",
        "trainer.test_batches=1",
        "attack.epsilon=0.2",
        "attack.step_size=0.1",
        "attack.steps=2",
        "evaluation=quick",
        "evaluation.epsilon=0.2",
        "device=cpu",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def _worker(rank: int, ports: tuple[int, int], out: str) -> None:
    """One rank: the trainer-level runs, then the whole pipeline (as torchrun would start it)."""
    torch.set_num_threads(1)
    out_dir = Path(out)
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(WORLD),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(ports[0]),
        }
    )
    distributed = DistributedOptions(timeout_min=2).start(torch.device("cpu"))
    try:
        results = {name: train(out_dir / name, name, distributed) for name in METHODS}
    finally:
        distributed.close()
    torch.save(results, out_dir / f"rank{rank}.pt")
    # Each rank names its own run folder, as torchrun ranks whose clocks differ would.
    os.environ["MASTER_PORT"] = str(ports[1])
    metrics = run_experiment(pipeline_config(), out_dir / f"pipeline_rank{rank}")
    save_json(out_dir / f"returned_rank{rank}.json", metrics)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    # fork: the ranks start with this process's imports (spawn re-imports torch & co, ~10 s);
    # each rank goes single-threaded first, so no OpenMP pool crosses the fork. The lazy
    # imports of the runs (TensorBoard, scikit-learn's digits) are made once, here.
    import sklearn.datasets  # noqa: F401
    import torch.utils.tensorboard  # noqa: F401

    ports = (free_port(), free_port())
    mp.start_processes(
        _worker, args=(ports, str(out)), nprocs=WORLD, join=True, start_method="fork"
    )
    return out


@pytest.mark.parametrize("name", list(METHODS))
def test_two_gloo_processes_train_like_one_process_on_the_global_batch(ddp_runs, tmp_path, name):
    single = train(tmp_path / name, name)
    ranks = [torch.load(ddp_runs / f"rank{r}.pt", weights_only=True)[name] for r in range(WORLD)]
    # Each step's loss over the global batch is the mean of the ranks' (equal) shares.
    ddp_losses = sum(rank["losses"] for rank in ranks) / WORLD
    assert len(ddp_losses) == len(single["losses"]) >= 2
    torch.testing.assert_close(ddp_losses, single["losses"], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ranks[0]["losses"], ranks[1]["losses"])  # the shares differ
    for key, value in single["state"].items():
        torch.testing.assert_close(ranks[0]["state"][key], value, rtol=1e-5, atol=1e-6)
        assert torch.equal(ranks[0]["state"][key], ranks[1]["state"][key]), key
    # The logged epoch metrics are reduced over the ranks: the single process's numbers.
    logged = json.loads((ddp_runs / name / "history.json").read_text())
    expected = json.loads((tmp_path / name / "history.json").read_text())
    assert logged.keys() == expected.keys() == {"1", "2"}
    for epoch, stats in expected.items():
        assert logged[epoch].keys() == stats.keys()
        for key, value in stats.items():
            assert logged[epoch][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_only_rank_zero_writes_and_returns_metrics(ddp_runs):
    for name in METHODS:
        run = ddp_runs / name
        assert len(list((run / "tensorboard").glob("events.*"))) == 1  # one writer, not two
        assert {p.name for p in (run / "checkpoints").iterdir()} == {"last.pt", "final.pt"}
    # The pipeline: rank 1 trained in rank 0's folder and left evaluation and files to it.
    assert (ddp_runs / "pipeline_rank0" / "metrics.json").exists()
    assert not (ddp_runs / "pipeline_rank1").exists()
    returned = [json.loads((ddp_runs / f"returned_rank{r}.json").read_text()) for r in (0, 1)]
    assert returned[1] == {}
    written = json.loads((ddp_runs / "pipeline_rank0" / "metrics.json").read_text())
    assert returned[0] == written and "test/robust_error/pgd" in written
    last = torch.load(ddp_runs / "pipeline_rank0/checkpoints/last.pt", weights_only=True)
    assert len(last["rng_ranks"]) == WORLD  # each rank's attack-noise stream, for resuming
