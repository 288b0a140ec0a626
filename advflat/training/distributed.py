"""Data-parallel training over several processes (torch's DistributedDataParallel, DDP).

A job runs as several processes when its launcher says so in the environment:

- torchrun (or any ``env://`` launcher): ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR``, ``MASTER_PORT``;
- submitit (``cluster=slurm`` or ``cluster=local`` with ``tasks_per_node`` > 1): its
  ``JobEnvironment`` gives the ranks and the job's host names; the first host is the master;
- a plain ``srun`` step: ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS``, ``SLURM_LOCALID`` and
  the first host of ``SLURM_JOB_NODELIST``. (A batch script that runs python directly is one
  process, whatever ``--ntasks`` says, so SLURM_NTASKS alone starts nothing.)

``MASTER_ADDR``/``MASTER_PORT`` always win when set; otherwise the port is drawn from the job id
(the same rule as submitit's ``TorchDistributedEnvironment``), so every task agrees on it.

Each rank takes ``cuda:LOCAL_RANK`` (or the one GPU it sees), the process group uses NCCL on
CUDA and gloo on CPU. The global batch (``trainer.batch_size``) is drawn, shuffled and augmented
exactly as in a single process from the shared data generator, and each rank trains on its
contiguous share; DDP averages the gradients, so a step equals the single-process step on the
global batch (up to the attacks' random starts, which each rank draws from its own stream).
Rank 0 alone writes (checkpoints, history, TensorBoard, metrics.json, logs, progress bars);
training metrics are reduced over the ranks.

BatchNorm: each rank normalises with the statistics of its share (DDP broadcasts rank 0's
running statistics at every training forward) unless ``sync_batchnorm`` (CUDA only) computes
them over the global batch; with BN the steps therefore differ slightly from one process.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from advflat.core import checks
from advflat.core.configured import Configured
from advflat.core.errors import ConfigError
from advflat.core.statistics import RunningMeans

log = logging.getLogger(__name__)

BACKENDS = ("auto", "nccl", "gloo")
# submitit's TorchDistributedEnvironment draws the port from this range, seeded by the job id.
PORTS = (20000, 60000)


@dataclass(frozen=True)
class Launch:
    """Where this process sits in its job (world_size 1: a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    source: str = "single"


def job_port(job_id: str) -> int:
    """The rendezvous port every task of job ``job_id`` derives alike."""
    return random.Random(job_id).randint(*PORTS)


def _from_job(job: Any, source: str) -> Launch:
    """A Launch from a submitit JobEnvironment (submitit's own or SLURM's)."""
    port = os.environ.get("MASTER_PORT")
    return Launch(
        rank=int(job.global_rank),
        world_size=int(job.num_tasks),
        local_rank=int(job.local_rank),
        master_addr=os.environ.get("MASTER_ADDR") or job.hostnames[0],
        master_port=int(port) if port else job_port(str(job.job_id)),
        source=source,
    )


def detect_launch() -> Launch:
    """This process's place in its job, from the launcher's environment (see the module doc)."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return Launch(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", 0)),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", 29500)),
            source="torchrun",
        )
    if env.get("SUBMITIT_EXECUTOR"):
        import submitit  # here: only jobs that submitit started need it

        return _from_job(submitit.JobEnvironment(), f"submitit-{env['SUBMITIT_EXECUTOR']}")
    if "SLURM_PROCID" in env and int(env.get("SLURM_STEP_NUM_TASKS", 1)) > 1:
        from submitit.slurm.slurm import SlurmJobEnvironment  # its SLURM_JOB_NODELIST parser

        launch = _from_job(SlurmJobEnvironment(), "srun")
        return Launch(**{**launch.__dict__, "world_size": int(env["SLURM_STEP_NUM_TASKS"])})
    return Launch()


class Distributed(Configured):
    """This process's part of a data-parallel job; one process is ``world_size`` 1, where
    every method below is the identity and nothing from ``torch.distributed`` is called."""

    def __init__(
        self,
        *,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
        sync_batchnorm: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.sync_batchnorm = sync_batchnorm

    @classmethod
    def single(cls, device: torch.device | str = "cpu") -> Distributed:
        return cls(device=torch.device(device))

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files, logs and progress bars."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    # ---- data ------------------------------------------------------------------------
    def shard(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        """This rank's contiguous share (dim 0) of each global-batch tensor."""
        if not self.active:
            return tensors
        return tuple(t.tensor_split(self.world_size)[self.rank] for t in tensors)

    # ---- the model -------------------------------------------------------------------
    def prepare_model(self, model: nn.Module) -> nn.Module:
        """SyncBatchNorm in place of BatchNorm when asked for (several CUDA processes)."""
        if self.active and self.sync_batchnorm:
            return nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` under DDP (gradients averaged over the ranks in backward)."""
        if not self.active:
            return module
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)

    # ---- collectives -----------------------------------------------------------------
    def average_(self, tensors: list[Tensor]) -> None:
        """In place: each tensor becomes its mean over the ranks (one flat all-reduce)."""
        if not self.active or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat.div_(self.world_size)
        _unflatten_into(flat, tensors)

    def broadcast_(self, tensors: list[Tensor]) -> None:
        """In place: every rank gets rank 0's values (one flat broadcast)."""
        if not self.active or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.broadcast(flat, src=0)
        _unflatten_into(flat, tensors)

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order."""
        if not self.active:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def shared(self, value: Any) -> Any:
        """Rank 0's ``value`` (picklable) on every rank."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def means(self, running: RunningMeans) -> dict[str, float]:
        """The running means over all ranks' examples (one all-reduce, one host read)."""
        if not self.active:
            return running.means()
        keys = sorted(set().union(*self.gather(sorted(running.keys()))))
        totals = torch.zeros(2, len(keys), dtype=torch.float64, device=self.device)
        for i, key in enumerate(keys):
            if key in running:
                totals[0, i] = running.total(key).to(totals)
                totals[1, i] = running.count(key)
        dist.all_reduce(totals)
        sums, counts = totals.tolist()
        return {key: s / c for key, s, c in zip(keys, sums, counts, strict=True) if c > 0}

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group (after the last collective of every rank)."""
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def _unflatten_into(flat: Tensor, tensors: list[Tensor]) -> None:
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


class DistributedOptions(Configured):
    """The ``distributed`` node: how a multi-process job talks (one process ignores it).

    ``backend``: auto (NCCL on CUDA, gloo on CPU), nccl or gloo; ``sync_batchnorm``: BN
    statistics over the global batch (CUDA only); ``timeout_min``: how long a collective waits
    for a slow or dead rank before the job fails.
    """

    def __init__(
        self, *, backend: str = "auto", sync_batchnorm: bool = False, timeout_min: int = 30
    ) -> None:
        self.backend = checks.one_of("backend", backend, BACKENDS)
        self.sync_batchnorm = sync_batchnorm
        self.timeout_min = checks.at_least("timeout_min", timeout_min, 1)

    def start(self, device: torch.device, launch: Launch | None = None) -> Distributed:
        """Join the job's process group (nothing for one process); returns this rank's part."""
        launch = detect_launch() if launch is None else launch
        if launch.world_size == 1:
            return Distributed.single(device)
        device = self._rank_device(device, launch)
        backend = self._backend(device)
        log.info(
            "rank %d of %d (%s) on %s, %s via %s:%d",
            launch.rank,
            launch.world_size,
            launch.source,
            device,
            backend,
            launch.master_addr,
            launch.master_port,
        )
        dist.init_process_group(
            backend,
            init_method=f"tcp://{launch.master_addr}:{launch.master_port}",
            rank=launch.rank,
            world_size=launch.world_size,
            timeout=timedelta(minutes=self.timeout_min),
        )
        if launch.rank > 0:
            logging.getLogger("advflat").setLevel(logging.WARNING)  # rank 0 logs for the job
        return Distributed(
            device=device,
            rank=launch.rank,
            world_size=launch.world_size,
            sync_batchnorm=self.sync_batchnorm,
        )

    def _rank_device(self, device: torch.device, launch: Launch) -> torch.device:
        if device.type != "cuda":
            if self.sync_batchnorm:
                raise ConfigError("distributed.sync_batchnorm needs CUDA devices (device=cuda)")
            return device
        if device.index is not None:
            raise ConfigError(
                f"device={device} pins one GPU, but this job has {launch.world_size} processes: "
                "use device=auto or cuda (each rank takes cuda:LOCAL_RANK)"
            )
        # A task that sees one GPU (CUDA_VISIBLE_DEVICES per task) uses it whatever its rank.
        index = launch.local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)

    def _backend(self, device: torch.device) -> str:
        if self.backend == "auto":
            return "nccl" if device.type == "cuda" else "gloo"
        if self.backend == "nccl" and device.type != "cuda":
            raise ConfigError("distributed.backend=nccl needs CUDA devices; use auto or gloo")
        return self.backend
