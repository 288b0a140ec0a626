"""Normal training, and the loop that every training method of the paper shares.

A method subclasses ``Trainer`` and overrides ``loss`` (what one batch costs) and, for methods
that change the update itself (AWP, Entropy-SGD), ``step``. Everything else — epochs, the
optimizer and the per-batch lr schedule, label smoothing and noise, EMA, snapshots, resuming,
TensorBoard, the fast path (``advflat.fast``) and data parallelism (``advflat.distributed``) —
lives here once.

The loss that is backpropagated comes from ``train_forward``: through DDP when the job has
several processes, through ``torch.compile`` when ``fast.compile`` is on. Attacks, evaluation
and every other forward use the plain model. Per-batch statistics stay on the device and are
read once per epoch: the step loop never waits for the GPU.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from tqdm.auto import tqdm

from advflat import checks
from advflat.attacks.base import Attack
from advflat.data.base import ImageData, Split
from advflat.distributed import Distributed
from advflat.errors import ConfigError
from advflat.fast import ActiveFastPath, FastPath
from advflat.performance import batch_performance
from advflat.statistics import RunningMeans
from advflat.training import checkpoint
from advflat.training.ema import ExponentialMovingAverage
from advflat.training.labels import noisy_labels
from advflat.training.losses import soft_cross_entropy, split_stats
from advflat.training.run_directory import RunDirectory
from advflat.training.schedules import Schedule

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
# Ranks > 0 draw attack noise from their own stream: rank r's global seed is seed + r·RANK_SEED.
RANK_SEED = 1_000_003


def _probe(name: str, factory: Callable[..., Any], *args: Any) -> None:
    """Build once on a dummy so torch validates lr, momentum, ... before any training starts."""
    try:
        factory(*args)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{name}: {error}") from None


class Trainer:
    """Normal training (Stutz et al.'s NormalTraining): CE on clean batches.

    ``attack`` (the ``attack`` group) is used by normal training only to log the adversarial
    test error each epoch; adversarial methods train against it. ``fast`` holds the fast-path
    switches (``trainer.fast``; default: all on ``auto``).
    """

    def __init__(
        self,
        *,
        epochs: int,
        optimizer: OptimizerFactory,
        scheduler: Schedule,
        batch_size: int = 128,
        label_smoothing: float = 0.0,
        label_noise: float = 0.0,
        resample_label_noise: bool = False,
        ema_decay: float | None = None,
        snapshot_every: int = 5,
        test_batches: int = 10,
        fast: FastPath | None = None,
        attack: Attack | None = None,
        weight_attack: Any = None,
    ) -> None:
        self.epochs = checks.at_least("epochs", epochs, 1)
        self.batch_size = checks.at_least("batch_size", batch_size, 1)
        self.label_smoothing = checks.in_range("label_smoothing", label_smoothing, 0.0, 1.0)
        self.label_noise = checks.in_range("label_noise", label_noise, 0.0, 1.0)
        self.resample_label_noise = resample_label_noise
        if ema_decay is not None:
            checks.in_range("ema_decay", ema_decay, 0.0, 1.0, low_open=True)
        self.ema_decay = ema_decay
        self.snapshot_every = checks.at_least("snapshot_every", snapshot_every, 0)
        self.test_batches = checks.at_least("test_batches", test_batches, 0)
        dummy = torch.zeros(1, requires_grad=True)
        _probe("optimizer", optimizer, [dummy])
        _probe("scheduler", scheduler, optimizer([dummy]), 1, epochs)
        self.make_optimizer, self.schedule = optimizer, scheduler
        self.attack, self.weight_attack = attack, weight_attack
        if fast is not None and not isinstance(fast, FastPath):
            raise ValueError(f"fast must be a FastPath (the trainer.fast node), got {fast!r}")
        self.fast = FastPath() if fast is None else fast
        self.fast.check_optimizer(optimizer)
        # Until prepare(): one process, every switch off, no wrapped forward.
        self.distributed = Distributed.single()
        self.active = ActiveFastPath(device=torch.device("cpu"))
        self._prepared: nn.Module | None = None
        self._forward: nn.Module | None = None

    # ---- what one batch costs (methods override) ----------------------------------------
    def criterion(self, logits: Tensor, y: Tensor) -> Tensor:
        return soft_cross_entropy(logits, y, self.label_smoothing)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Return the scalar training loss and detached per-batch stats (device tensors)."""
        logits = self.train_forward(model, x)  # (B, K)
        loss = self.criterion(logits, y)
        return loss, split_stats("clean", logits, y, loss)

    def training_module(self, model: nn.Module) -> nn.Module:
        """What the training forward runs and the optimizer updates (methods may add heads)."""
        return model

    def train_forward(self, model: nn.Module, x: Tensor) -> Any:
        """The train-mode forward whose loss is backpropagated.

        For the model ``prepare`` set up it runs through DDP (several processes) and
        torch.compile (``fast.compile``); any other model is called as it is.
        """
        forward = self._forward if model is self._prepared else self.training_module(model)
        assert forward is not None
        forward.train()  # the wrappers (DDP, compiled) pass the mode on to the model
        return forward(x)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast around forward passes when the fast path has it (never backward)."""
        return self.active.autocast_context()

    def inputs(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The inputs a train-mode forward sees (BN recalibration after EMA reuses this)."""
        return x

    def step(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """One optimisation step on a batch."""
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss, stats = self.loss(model, x, y)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return stats

    # ---- the loop ---------------------------------------------------------------------
    def fit(
        self,
        model: nn.Module,
        data: ImageData,
        run: RunDirectory,
        distributed: Distributed | None = None,
    ) -> nn.Module:
        """Train (resuming from ``run``'s last.pt if present); return the model to evaluate.

        With ``distributed`` (several processes) every rank calls ``fit`` alike; rank 0 writes.
        """
        self.prepare(model, data, run.seed, distributed)
        run = run if self.distributed.is_main else run.read_only()
        start = self._resume(model, run)
        labels = self._training_labels(data, run.seed)
        epochs = tqdm(
            range(start, self.epochs + 1),
            desc="epochs",
            initial=start - 1,
            total=self.epochs,
            disable=self._quiet(),
        )
        for epoch in epochs:
            stats = self.train_epoch(model, data, labels)
            stats.update(self.test_epoch(model, data))
            stats["train/lr"] = self.optimizer.param_groups[0]["lr"]
            stats.update(self.after_epoch(model, data, run, epoch))
            run.log_scalars(stats, epoch)
            log.info("epoch %d/%d %s", epoch, self.epochs, _summary(stats))
            epochs.set_postfix_str(_summary(stats, short=True))
            self._save(model, run, epoch)
        return self._final_model(model, data, run, labels)

    def prepare(
        self,
        model: nn.Module,
        data: ImageData,
        seed: int,
        distributed: Distributed | None = None,
    ) -> None:
        """Set up ``model`` for training: fast path, data parallelism, optimizer, lr schedule,
        EMA and the data generator (shared by all ranks: they agree on every global batch)."""
        device = device_of(model)
        self.distributed = Distributed.single(device) if distributed is None else distributed
        self._check_shards(self.distributed.world_size)
        self.active = self.fast.resolve(device, self.make_optimizer)
        self.generator = torch.Generator().manual_seed(seed)
        if self.distributed.rank > 0:
            torch.manual_seed(seed + RANK_SEED * self.distributed.rank)
        self.distributed.prepare_model(model)  # SyncBatchNorm, in place
        self.active.prepare_model(model)  # channels_last, in place
        module = self.training_module(model)
        self.optimizer = self.active.optimizer(self.make_optimizer, module.parameters())
        steps = data.train.num_batches(self.batch_size, drop_last=self._drop_last(data))
        self.scheduler = self.schedule(self.optimizer, steps, self.epochs)
        self.ema = (
            None if self.ema_decay is None else ExponentialMovingAverage(model, self.ema_decay)
        )
        self._prepared = model
        self._forward = self.active.compiled(self.data_parallel(module))

    def data_parallel(self, module: nn.Module) -> nn.Module:
        """``module`` under DDP in a multi-process job (methods that average by hand: as is)."""
        return self.distributed.wrap(module)

    def _check_shards(self, world_size: int) -> None:
        if self.batch_size % world_size:
            raise ConfigError(
                f"trainer.batch_size ({self.batch_size}) is the global batch and must divide "
                f"evenly over the job's {world_size} processes"
            )

    def _quiet(self) -> bool | None:
        # tqdm: None hides the bar when stderr is not a TTY; other ranks never show one.
        return None if self.distributed.is_main else True

    def local_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """This rank's share of a global batch, in the model's memory format."""
        x, y = self.distributed.shard(x, y)
        return self.active.batch(x), y

    def _drop_last(self, data: ImageData) -> bool:
        # A trailing batch of 1 breaks train-mode BN: drop the remainder once batches are full.
        return len(data.train) > self.batch_size

    def batches(self, data: ImageData, labels: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of shuffled, augmented training batches (methods may mix in more data)."""
        train = Split(data.train.x, labels)
        drop_last = self._drop_last(data)
        batches = train.batches(
            self.batch_size, shuffle=True, generator=self.generator, drop_last=drop_last
        )
        total = train.num_batches(self.batch_size, drop_last=drop_last)
        bar = tqdm(batches, total=total, desc="batches", leave=False, disable=self._quiet())
        for x, y in bar:
            if self.resample_label_noise:
                y = noisy_labels(y, self.label_noise, data.num_classes, self.generator)
            # Every rank augments the whole global batch with the shared generator (as one
            # process would), then keeps its share.
            yield self.local_batch(data.augment(x, self.generator), y)

    def train_epoch(self, model: nn.Module, data: ImageData, labels: Tensor) -> dict[str, float]:
        means = RunningMeans()
        for x, y in self.batches(data, labels):
            means.add(self.step(model, x, y), len(y))  # device tensors: no host sync here
            self.after_step(model)
        return {f"train/{key}": value for key, value in self.distributed.means(means).items()}

    def after_step(self, model: nn.Module) -> None:
        """Called after every optimizer step (weight clipping hooks in here)."""
        if self.ema is not None:
            self.ema.update(model)

    def after_epoch(
        self, model: nn.Module, data: ImageData, run: RunDirectory, epoch: int
    ) -> dict[str, float]:
        """Called after every epoch, before logging; returns extra scalars (early stopping)."""
        return {}

    @torch.no_grad()
    def test_epoch(self, model: nn.Module, data: ImageData) -> dict[str, float]:
        """Clean and adversarial loss/error on the first ``test_batches`` test batches."""
        if self.test_batches == 0:
            return {}
        means = RunningMeans()
        model.eval()
        subset = data.test.first(self.test_batches * self.batch_size)
        for x, y in subset.batches(self.batch_size):
            x, y = self.local_batch(x, y)
            if len(y) == 0:  # a last batch smaller than the number of ranks
                continue
            with self.autocast():
                means.add(batch_performance(model, x, y, self.attack), len(y))
        return {f"test/{key}": value for key, value in self.distributed.means(means).items()}

    def _training_labels(self, data: ImageData, seed: int) -> Tensor:
        if self.resample_label_noise or self.label_noise == 0:
            return data.train.y
        # Drawn once per example from the run's seed: identical across epochs and resumes.
        generator = torch.Generator().manual_seed(seed + 1)
        return noisy_labels(data.train.y, self.label_noise, data.num_classes, generator)

    # ---- checkpoints ------------------------------------------------------------------
    def _state(self, model: nn.Module, epoch: int, run: RunDirectory) -> dict[str, Any]:
        return {
            "format": checkpoint.FORMAT,
            "epoch": epoch,
            "model": model.state_dict(),
            "model_config": run.model_config,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "rng": checkpoint.rng_state(self.generator),
            # Each rank's own global RNG (its attack noise), so a resumed job replays exactly.
            "rng_ranks": self.distributed.gather(checkpoint.global_rng_state()),
            "config": run.config,
        }

    def _save(self, model: nn.Module, run: RunDirectory, epoch: int) -> None:
        state = self._state(model, epoch, run)  # on every rank: gathering the RNGs is collective
        if not run.writes:
            return
        checkpoint.save_torch(run.last_checkpoint, state)
        if self.snapshot_every and epoch % self.snapshot_every == 0:
            checkpoint.save_model(run.snapshot(epoch), model, run.model_config, epoch)

    def _resume(self, model: nn.Module, run: RunDirectory) -> int:
        """Restore from last.pt when the run directory has one; return the first epoch to train."""
        if not run.last_checkpoint.exists():
            return 1
        state = checkpoint.read(run.last_checkpoint)
        if run.config and state.get("config") and state["config"] != run.config:
            raise ConfigError(
                f"{run.last_checkpoint} belongs to a run with a different config; "
                "resume with the same overrides or choose another hydra.run.dir"
            )
        model.load_state_dict(state["model"])
        _load_optimizer(self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        checkpoint.set_rng_state(state["rng"], self.generator)
        self._restore_rank_rng(state, run.seed)
        log.info("resuming from %s after epoch %d", run.last_checkpoint, state["epoch"])
        return int(state["epoch"]) + 1

    def _restore_rank_rng(self, state: dict[str, Any], seed: int) -> None:
        ranks = state.get("rng_ranks") or []
        if len(ranks) == self.distributed.world_size:
            checkpoint.set_global_rng_state(ranks[self.distributed.rank])
        elif self.distributed.rank > 0:
            # Resumed with another number of processes: a fresh stream per rank and epoch.
            torch.manual_seed(seed + RANK_SEED * self.distributed.rank + int(state["epoch"]))

    def _final_model(
        self, model: nn.Module, data: ImageData, run: RunDirectory, labels: Tensor
    ) -> nn.Module:
        final = model
        if self.ema is not None:
            train = Split(data.train.x, labels)
            final = self.ema.finalize(
                lambda averaged: (
                    self.inputs(averaged, x, y) for x, y in train.batches(self.batch_size)
                )
            )
        if run.writes:
            checkpoint.save_model(
                run.checkpoints / "final.pt", final, run.model_config, self.epochs
            )
        return final.eval()


def device_of(model: nn.Module) -> torch.device:
    """Where ``model`` lives (its first parameter or buffer; CPU for an empty module)."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device


def _load_optimizer(optimizer: Optimizer, state: dict[str, Any]) -> None:
    """Load ``state`` but keep this run's kernel flags (a state dict carries fused/foreach)."""
    kernels = ("fused", "foreach")
    flags = [{k: group[k] for k in kernels if k in group} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, own in zip(optimizer.param_groups, flags, strict=True):
        group.update(own)


def _summary(stats: dict[str, float], short: bool = False) -> str:
    keys = [k for k in stats if k.endswith("_error")] if short else list(stats)
    return " ".join(f"{k.split('/', 1)[-1] if short else k}={stats[k]:.4g}" for k in keys)
