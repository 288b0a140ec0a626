"""Where a run writes: checkpoints/, tensorboard/, metrics.json (the log file is Hydra's).

In a multi-process job every rank reads the same folder (to resume) but only rank 0 writes:
the other ranks hold a ``read_only`` view, whose writers do nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advflat.core.io import save_json
from advflat.core.schema import fail, flat_metrics, mapping, read_json

if TYPE_CHECKING:  # importing TensorBoard is slow: at run time only ``writer`` does
    from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger(__name__)


class RunDirectory:
    """A run's output folder plus the plain-container facts a checkpoint must carry."""

    def __init__(
        self,
        path: Path | str,
        *,
        seed: int = 0,
        config: dict[str, Any] | None = None,
        writes: bool = True,
    ) -> None:
        self.path = Path(path)
        self.seed = seed
        self.config = config or {}
        self.writes = writes
        self.model_config: dict[str, Any] = {}
        self._writer: SummaryWriter | None = None

    def read_only(self) -> RunDirectory:
        """The same run for a process that must not write (ranks > 0 of a DDP job)."""
        view = RunDirectory(self.path, seed=self.seed, config=self.config, writes=False)
        view.model_config = self.model_config
        return view

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.pt"

    def snapshot(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch_{epoch:03d}.pt"

    @property
    def writer(self) -> SummaryWriter:
        # Created lazily: importing and opening TensorBoard costs ~1 s and only training needs it.
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.path / "tensorboard"))
        return self._writer

    @property
    def history_file(self) -> Path:
        return self.path / "history.json"

    def log_scalars(self, scalars: dict[str, float], epoch: int) -> None:
        """Per-epoch scalars to TensorBoard and to history.json (rewritten atomically)."""
        if not self.writes:
            return
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, epoch)
        self.writer.flush()
        history = self.history(before=epoch)
        history[str(epoch)] = scalars
        save_json(self.history_file, history)

    def history(self, before: int | None = None) -> dict[str, dict[str, float]]:
        """Logged epochs (only those < ``before``: a resumed run rewrites later ones)."""
        if not self.history_file.exists():
            return {}
        history = mapping(read_json(self.history_file), self.history_file)
        for epoch, values in history.items():
            if not epoch.isdigit():
                fail(self.history_file, epoch, "is not an epoch (a whole number)")
            flat_metrics(values, self.history_file, epoch)
        return {e: m for e, m in history.items() if before is None or int(e) < before}

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.json"

    def write_metrics(self, metrics: dict[str, float]) -> Path:
        """config.json first, metrics.json last: metrics.json marks a finished run."""
        if not self.writes:
            return self.metrics_file
        save_json(self.path / "config.json", self.config, sort_keys=False)
        save_json(self.metrics_file, metrics)
        return self.metrics_file

    def finished_metrics(self) -> dict[str, float] | None:
        """The metrics of an earlier, finished run of the same config in this folder, if any."""
        config = self.path / "config.json"
        if not (self.metrics_file.exists() and config.exists()):
            return None
        if read_json(config) != json.loads(json.dumps(self.config)):
            return None
        return flat_metrics(read_json(self.metrics_file), self.metrics_file)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
