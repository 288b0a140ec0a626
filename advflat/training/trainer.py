"""The one training loop: a loss (what a batch costs) × an update rule (how the weights move).

``Trainer`` owns everything the paper's methods share — epochs, the optimizer and the
per-batch lr schedule, label smoothing and noise, the ε warm-up, weight clipping, EMA, early
stopping, snapshots, resuming, TensorBoard, collapse and divergence detection, the fast path
(``advflat.training.fast_path``) and data parallelism (``advflat.training.distributed``). The method
itself is two objects: ``loss`` (``advflat.training.losses``, the ``trainer`` group) and
``update`` (``advflat.training.updates``, the ``trainer/update`` group). They reach the trainer's
services through a ``TrainingContext``.

The loss that is backpropagated comes from the context's ``train_forward``: through DDP when
the job has several processes (unless the update averages by hand), through ``torch.compile``
when ``fast.compile`` is on. Attacks, evaluation and every other forward use the plain model.
Per-batch statistics stay on the device and are read once per epoch: the step loop never waits
for the GPU. A statistic or weight that is not finite stops the run at the end of its epoch,
before that epoch is saved (``advflat.training.divergence``). Method state (the loss's, the
update's, early stopping's) travels in ``last.pt`` (``advflat.training.checkpoint`` writes and
restores it), so a resumed run continues bitwise where it stopped.

One batch, from ``train_epoch`` to the loss: ``epoch_steps`` yields (x, y);
``update.step`` (``updates/sgd.py``) calls ``loss.inputs`` (``losses/adversarial.py``: the
attack, ``attacks/pgd.py``, in the attack's mode), runs ``context.train_forward`` on them once
and hands the outputs to ``loss.on`` (the cross-entropy, ``context.criterion``); then it
backpropagates and steps the optimizer.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from tqdm.auto import tqdm

from advflat.attacks import inputs as input_checks
from advflat.attacks.base import Attack
from advflat.core import checks
from advflat.core.classification import batch_performance
from advflat.core.errors import ConfigError
from advflat.core.statistics import RunningMeans
from advflat.data.base import ImageData, Split
from advflat.training import checkpoint
from advflat.training.collapse import CollapseDetector
from advflat.training.context import TrainingContext
from advflat.training.distributed import Distributed
from advflat.training.divergence import (
    DIVERGED,
    DivergenceWatch,
    TrainingDivergedError,
    diverged_message,
    non_finite,
)
from advflat.training.early_stopping import EarlyStopping
from advflat.training.ema import ExponentialMovingAverage
from advflat.training.fast_path import ActiveFastPath, FastPath
from advflat.training.labels import BatchLabelNoise, flipped_labels
from advflat.training.losses.base import BatchPlan, Loss
from advflat.training.run_directory import RunDirectory
from advflat.training.schedules import Schedule
from advflat.training.updates.base import Update
from advflat.training.weight_clipping import clip_weights
from advflat.weights import WeightAttack

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]


def _probe(name: str, factory: Callable[..., Any], *args: Any) -> None:
    """Build once on a dummy so torch validates lr, momentum, ... before any training starts."""
    try:
        factory(*args)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{name}: {error}") from None


def _check_lr(lr: Any) -> None:
    # torch accepts 0 (a run that never moves) and inf (a run that diverges at its first step).
    if lr is not None:
        checks.positive("optimizer.lr", lr)


class Trainer:
    """Train ``loss`` with ``update`` (see the module docstring).

    ``attack`` (the ``attack`` group) is handed to the loss (adversarial losses train against
    it) and feeds the per-epoch test curves; ``weight_attack`` (the top-level group) is handed
    to the update, which refuses it unless it uses it (``trainer/update=awp``).
    ``epsilon_warmup_epochs`` W: epoch e <= W trains at e/W of the attack's ε and step size
    (decision: the first epoch already uses ε/W, none is wasted on clean training).
    ``fast`` holds the fast-path switches (``trainer.fast``; default: all on ``auto``).
    ``label_noise`` τ (``advflat.training.labels``): redrawn for every global batch, seen by the
    loss only (the attack targets the true label); ``label_noise_per_example`` instead relabels
    the training set once from the seed (attack included). The logged train errors are measured
    against the labels the loss trains on.
    """

    def __init__(
        self,
        *,
        epochs: int,
        batch_size: int,
        optimizer: OptimizerFactory,
        scheduler: Schedule,
        loss: Loss,
        update: Update,
        label_smoothing: float,
        label_noise: float,
        label_noise_per_example: bool,
        ema_decay: float | None,
        weight_clipping: float | None,
        epsilon_warmup_epochs: int,
        early_stopping: EarlyStopping | None = None,
        attack_in_eval_mode: bool = True,
        snapshot_every: int = 5,
        test_batches: int = 10,
        fast: FastPath | None = None,
        attack: Attack | None = None,
        weight_attack: WeightAttack | None = None,
    ) -> None:
        self.epochs = checks.at_least("epochs", epochs, 1)
        self.batch_size = checks.at_least("batch_size", batch_size, 1)
        self.label_smoothing = checks.in_range("label_smoothing", label_smoothing, 0.0, 1.0)
        self.label_noise = checks.in_range("label_noise", label_noise, 0.0, 1.0)
        self.label_noise_per_example = checks.one_of(
            "label_noise_per_example", label_noise_per_example, (False, True)
        )
        if ema_decay is not None:
            checks.in_range("ema_decay", ema_decay, 0.0, 1.0, low_open=True)
        if early_stopping is not None and ema_decay is not None:
            # best.pt holds the raw weights of one epoch; an average over epochs is another model.
            raise ValueError("early_stopping cannot be combined with ema_decay (choose one)")
        self.ema_decay, self.early_stopping = ema_decay, early_stopping
        if weight_clipping is not None:
            checks.positive("weight_clipping", weight_clipping)
        self.weight_clipping = weight_clipping
        self.epsilon_warmup_epochs = checks.at_least(
            "epsilon_warmup_epochs", epsilon_warmup_epochs, 0
        )
        self.attack_in_eval_mode = attack_in_eval_mode
        self.snapshot_every = checks.at_least("snapshot_every", snapshot_every, 0)
        if snapshot_every == 0:
            log.warning("no snapshots: flatness over epochs and advflat-eval --all need them")
        elif snapshot_every > epochs:
            log.warning(
                "trainer.snapshot_every (%d) is larger than trainer.epochs (%d), so no snapshot "
                "is written: flatness over epochs and advflat-eval --all need them",
                snapshot_every,
                epochs,
            )
        self.test_batches = checks.at_least("test_batches", test_batches, 0)
        _check_lr(getattr(optimizer, "keywords", {}).get("lr"))  # the conf's partial node
        dummy = nn.Parameter(torch.zeros(1))
        _probe("optimizer", optimizer, [dummy])
        _check_lr(optimizer([dummy]).param_groups[0]["lr"])
        _probe("scheduler", scheduler, optimizer([dummy]), 1, epochs)
        self.make_optimizer, self.schedule = optimizer, scheduler
        self.loss, self.update = loss, update
        self.attack, self.weight_attack = attack, weight_attack
        loss.attach(attack)
        update.attach(weight_attack)
        if fast is not None and not isinstance(fast, FastPath):
            raise ValueError(f"fast must be a FastPath (the trainer.fast node), got {fast!r}")
        self.fast = FastPath() if fast is None else fast
        self.fast.check_optimizer(optimizer)
        self.collapse = CollapseDetector()
        self.divergence = DivergenceWatch()
        # Until prepare(): one process, every switch off, a context without a prepared model.
        self.distributed = Distributed.single()
        self.active = ActiveFastPath(device=torch.device("cpu"))
        self.context = self._context()

    def _context(self, **prepared: Any) -> TrainingContext:
        return TrainingContext(
            label_smoothing=self.label_smoothing,
            attack_in_eval_mode=self.attack_in_eval_mode,
            distributed=self.distributed,
            autocast_factory=self.active.autocast_context,
            **prepared,
        )

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
        start = self.resume(model, run)
        labels = self._training_labels(data, run.seed)
        epochs = tqdm(
            range(start, self.epochs + 1),
            desc="epochs",
            initial=start - 1,
            total=self.epochs,
            disable=self._quiet(),
        )
        for epoch in epochs:
            stats = self.warm_up(epoch)
            stats.update(self.train_epoch(model, data, labels))
            self._stop_if_diverged(model, run, epoch, stats)
            stats.update(self.test_epoch(model, data))
            stats["train/lr"] = self.optimizer.param_groups[0]["lr"]
            stats.update(self.after_epoch(model, data, run, epoch))
            run.log_scalars(stats, epoch)
            collapsed = self.collapse.check(epoch, self.epochs, stats, data.num_classes)
            log.info("epoch %d/%d %s", epoch, self.epochs, _summary(stats))
            if collapsed:
                log.warning("epoch %d: %s", epoch, self.collapse.message(data.num_classes))
            epochs.set_postfix_str(_summary(stats, short=True) + " COLLAPSED" * collapsed)
            self.save(model, run, epoch)
        return self._final_model(model, data, run, labels)

    def _stop_if_diverged(
        self, model: nn.Module, run: RunDirectory, epoch: int, stats: dict[str, float]
    ) -> None:
        """End the run at a training statistic or weight that is not finite: the epoch is
        logged with ``diagnostics/diverged: 1`` but neither tested nor saved, so last.pt keeps
        the last good epoch (``advflat.training.divergence``)."""
        module = self.loss.training_module(model)
        batch, weights_finite = self.divergence.read(
            itertools.chain(module.parameters(), module.buffers())
        )
        bad = non_finite(stats)
        if not bad and weights_finite:
            return
        run.log_scalars({**stats, DIVERGED: 1.0}, epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        raise TrainingDivergedError(diverged_message(epoch, batch, bad, lr, last_good=epoch - 1))

    def diagnostics(self) -> dict[str, float]:
        """Run diagnostics for metrics.json (``diagnostics/collapsed``)."""
        return self.collapse.diagnostics()

    def warm_up(self, epoch: int) -> dict[str, float]:
        """Set the training attack's ε for ``epoch`` (the warm-up); returns ``train/epsilon``."""
        warmup = self.epsilon_warmup_epochs
        scale = min(1.0, epoch / warmup) if warmup else 1.0
        epsilon = self.loss.warm_up(scale)
        return {} if epsilon is None else {"train/epsilon": epsilon}

    def prepare(
        self,
        model: nn.Module,
        data: ImageData,
        seed: int,
        distributed: Distributed | None = None,
    ) -> None:
        """Set up ``model`` for training: fast path, data parallelism, the loss's heads and
        data, optimizer, lr schedule, EMA and the data generator (shared by all ranks: they
        agree on every global batch)."""
        device = device_of(model)
        self.distributed = Distributed.single(device) if distributed is None else distributed
        self._check_shards(self.distributed.world_size)
        self.active = self.fast.resolve(device, self.make_optimizer)
        self.generator = torch.Generator().manual_seed(seed)
        if self.distributed.rank > 0:
            torch.manual_seed(seed + checkpoint.RANK_SEED * self.distributed.rank)
        self.distributed.prepare_model(model)  # SyncBatchNorm, in place
        self.active.prepare_model(model)  # channels_last, in place
        self.loss.prepare(model, data, device)
        module = self.loss.training_module(model)
        self.optimizer = self.active.optimizer(self.make_optimizer, module.parameters())
        steps = data.train.num_batches(self.batch_size, drop_last=self._drop_last(data))
        self.scheduler = self.schedule(self.optimizer, steps, self.epochs)
        self.ema = (
            None if self.ema_decay is None else ExponentialMovingAverage(model, self.ema_decay)
        )
        parallel = self.distributed.wrap(module) if self.update.data_parallel else module
        self.update.prepare()
        self.context = self._context(
            generator=self.generator,
            module=module,
            forward=self.active.compiled(parallel),
            optimizer=self.optimizer,
            scheduler=self.scheduler,
        )

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
        """One epoch of shuffled, augmented training batches (the loss may mix in more data)."""
        drop_last = self._drop_last(data)
        per_batch = 0.0 if self.label_noise_per_example else self.label_noise
        noise = BatchLabelNoise(per_batch, data.num_classes)
        plan = BatchPlan(self.batch_size, drop_last, self.generator, noise)
        total = data.train.num_batches(self.batch_size, drop_last=drop_last)
        draws = self.loss.draw(plan, data, labels)
        for x, y in tqdm(draws, total=total, desc="batches", leave=False, disable=self._quiet()):
            # Every rank augments the whole global batch with the shared generator (as one
            # process would), then keeps its share.
            yield self.local_batch(data.augment(x, self.generator), y)

    def epoch_steps(self, data: ImageData, labels: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        """The update rule's steps over the epoch's passes (Entropy-SGD: several per step)."""
        passes = [self.batches(data, labels) for _ in range(self.update.passes_per_epoch)]
        return self.update.steps(itertools.chain.from_iterable(passes))

    def train_epoch(self, model: nn.Module, data: ImageData, labels: Tensor) -> dict[str, float]:
        means, self.divergence = RunningMeans(), DivergenceWatch()
        # The attacks' input checks become device-side asserts on CUDA: no host sync per step.
        with input_checks.without_sync():
            for x, y in self.epoch_steps(data, labels):
                stats = self.update.step(self.context, self.loss, model, x, y)
                means.add(stats, len(y))  # device tensors: no host sync here
                self.divergence.add(stats)  # nor here
                self.after_step(model)
        return {f"train/{key}": value for key, value in self.distributed.means(means).items()}

    def after_step(self, model: nn.Module) -> None:
        """After every optimizer step: weight clipping, then EMA (the average sees clipped w)."""
        if self.weight_clipping is not None:
            clip_weights(model, self.weight_clipping)
        if self.ema is not None:
            self.ema.update(model)

    def after_epoch(
        self, model: nn.Module, data: ImageData, run: RunDirectory, epoch: int
    ) -> dict[str, float]:
        """After every epoch, before logging: early stopping's scalars."""
        if self.early_stopping is None:
            return {}
        return self.early_stopping.update(model, data, run, epoch)

    @torch.no_grad()
    def test_epoch(self, model: nn.Module, data: ImageData) -> dict[str, float]:
        """Clean and robust loss/error on the first ``test_batches`` test batches."""
        if self.test_batches == 0:
            return {}
        means = RunningMeans()
        model.eval()
        subset = data.test.first(self.test_batches * self.batch_size)
        for x, y in subset.batches(self.batch_size):
            x, y = self.local_batch(x, y)
            if len(y) == 0:  # a last batch smaller than the number of ranks
                continue
            with self.active.autocast_context():
                means.add(batch_performance(model, x, y, self.attack), len(y))
        return {f"test/{key}": value for key, value in self.distributed.means(means).items()}

    def _training_labels(self, data: ImageData, seed: int) -> Tensor:
        if not self.label_noise_per_example or self.label_noise == 0:
            return data.train.y
        # Drawn once per example from the run's seed: identical across epochs and resumes.
        generator = torch.Generator().manual_seed(seed + 1)
        return flipped_labels(data.train.y, self.label_noise, data.num_classes, generator)

    # ---- checkpoints ------------------------------------------------------------------
    def method_state(self) -> dict[str, Any]:
        """The loss's, the update's and early stopping's state (``weights_only``-safe)."""
        state: dict[str, Any] = {
            "loss": self.loss.state_dict(),
            "update": self.update.state_dict(),
            "collapsed": self.collapse.collapsed,
        }
        if self.early_stopping is not None:
            state["early_stopping"] = self.early_stopping.state_dict()
        return state

    def load_method_state(self, state: dict[str, Any]) -> None:
        self.loss.load_state_dict(state.get("loss") or {})
        self.update.load_state_dict(state.get("update") or {})
        self.collapse.collapsed = bool(state.get("collapsed", False))
        if self.early_stopping is not None and "early_stopping" in state:
            self.early_stopping.load_state_dict(state["early_stopping"])

    def save(self, model: nn.Module, run: RunDirectory, epoch: int) -> None:
        """last.pt (and snapshots) after ``epoch`` (``advflat.training.checkpoint``)."""
        checkpoint.save(self, model, run, epoch)

    def resume(self, model: nn.Module, run: RunDirectory) -> int:
        """Restore from ``run``'s last.pt if it has one; the first epoch to train."""
        return checkpoint.resume(self, model, run)

    def _final_model(
        self, model: nn.Module, data: ImageData, run: RunDirectory, labels: Tensor
    ) -> nn.Module:
        if self.collapse.collapsed:
            log.warning("final: %s", self.collapse.message(data.num_classes))
        # Ranks > 0 skip it: their model is not evaluated and best.pt may still be in flight.
        if self.early_stopping is not None and run.writes:
            self.early_stopping.restore_best(model, run)
        final = model
        if self.ema is not None:
            train = Split(data.train.x, labels)
            final = self.ema.finalize(self.recalibration_inputs(self.ema.model, train))
        if run.writes:
            checkpoint.save_model(
                run.checkpoints / "final.pt", final, run.model_config, self.epochs, run.config
            )
        return final.eval()

    def recalibration_inputs(self, averaged: nn.Module, train: Split) -> Iterator[Tensor]:
        """What the averaged model's BN statistics are re-estimated on: the loss's inputs for
        it (under AT, its adversarial examples) over the training set."""
        for x, y in train.batches(self.batch_size):
            yield self.loss.inputs(self.context, averaged, x, y)


def device_of(model: nn.Module) -> torch.device:
    """Where ``model`` lives (its first parameter or buffer; CPU for an empty module)."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device


def _summary(stats: dict[str, float], short: bool = False) -> str:
    """All scalars, or (the progress bar) the errors, each under its full train/ or test/ name."""
    keys = [k for k in stats if k.endswith("_error")] if short else list(stats)
    return " ".join(f"{k}={stats[k]:.4g}" for k in keys)
