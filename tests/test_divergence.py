"""A non-finite training loss or weight stops the run with one line, keeps the last good epoch
and records ``diagnostics/diverged``; the run resumes from that epoch."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch

from advflat.models import MLP
from advflat.training.divergence import (
    DIVERGED,
    DivergenceWatch,
    TrainingDivergedError,
    diverged_message,
    non_finite,
)
from advflat.training.run_directory import RunDirectory
from tests.conftest import ROOT
from tests.setups import MLP_CONFIG, trainer

NAN, INF = float("nan"), float("inf")


def test_the_watch_names_the_first_non_finite_batch_and_finite_weights():
    watch = DivergenceWatch()
    for loss in (0.5, NAN, INF, 0.4):
        watch.add({"clean_loss": torch.tensor(loss), "clean_error": torch.tensor(0.1)})
    assert watch.read([torch.ones(3), torch.tensor([1, 2])]) == (2, True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_watch_adds_cuda_batches_without_synchronising():
    device = torch.device("cuda")
    batches = [torch.tensor(loss, device=device) for loss in (0.5, 0.4, NAN, 0.3)]
    torch.cuda.synchronize()
    watch = DivergenceWatch()
    torch.cuda.set_sync_debug_mode("error")  # any host sync raises
    try:
        for loss in batches:
            watch.add({"clean_loss": loss, "clean_error": loss * 0})
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert watch.read([torch.ones(3, device=device)]) == (3, True)  # the epoch's one read


def test_the_watch_without_a_bad_batch_still_sees_non_finite_weights():
    watch = DivergenceWatch()
    watch.add({"clean_loss": torch.tensor(0.5)})
    assert watch.read([torch.ones(3)]) == (None, True)
    assert watch.read([torch.ones(3), torch.tensor([1.0, INF])]) == (None, False)


def test_non_finite_statistics_are_listed_losses_first():
    stats = {"train/clean_error": NAN, "train/epsilon": 0.1, "train/robust_loss": INF}
    assert list(non_finite(stats)) == ["train/robust_loss", "train/clean_error"]


def test_the_message_says_where_which_value_the_lr_and_what_to_try():
    line = diverged_message(2, 3, {"train/robust_loss": NAN}, 1e6, last_good=1)
    assert line == (
        "training diverged at epoch 2, batch 3 (train/robust_loss nan, lr 1e+06): lower "
        "trainer.optimizer.lr (or the schedule's peak_lr), or warm up with "
        "trainer.epsilon_warmup_epochs; checkpoints/last.pt keeps epoch 1"
    )
    first = diverged_message(1, None, {}, 0.1, last_good=0)
    assert first.startswith("training diverged at the end of epoch 1 (weights not finite, lr 0.1)")
    assert first.endswith("no epoch finished, so nothing was saved")


class PoisonedMLP(MLP):
    """The tests' tiny MLP, returning NaN logits from its ``poison_at``-th training-mode forward
    on: its gradients, and after the optimizer step its weights, turn NaN, as in a real
    divergence."""

    def __init__(self, poison_at: int) -> None:
        model = {k: v for k, v in MLP_CONFIG.items() if k != "_target_"}
        super().__init__(**model)
        self.poison_at, self.calls = poison_at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.poison_at:
                return logits * math.nan
        return logits


def finite_weights(path: Path) -> tuple[int, bool]:
    state = torch.load(path, weights_only=True)
    values = [v for v in state["model"].values() if v.is_floating_point()]
    return state["epoch"], all(bool(torch.isfinite(v).all()) for v in values)


def test_divergence_stops_before_the_epoch_is_saved_and_the_run_resumes(tmp_path, tiny_data):
    # 96 examples, batches of 32: 3 batches an epoch; the 6th training forward is epoch 2's 3rd.
    fit = partial(trainer, epochs=2, snapshot_every=1, test_batches=1)
    run = RunDirectory(tmp_path, seed=0)
    run.model_config = MLP_CONFIG
    with pytest.raises(TrainingDivergedError) as stopped:
        try:
            fit().fit(PoisonedMLP(poison_at=6), tiny_data, run)
        finally:
            run.close()
    assert str(stopped.value).startswith(
        "training diverged at epoch 2, batch 3 (train/clean_loss nan, lr 0.1): "
    )
    assert str(stopped.value).endswith("checkpoints/last.pt keeps epoch 1")
    assert finite_weights(run.last_checkpoint) == (1, True)
    assert not run.snapshot(2).exists()  # the NaN epoch is not a snapshot either
    history = run.history()
    assert history["2"][DIVERGED] == 1
    assert history["2"]["train/clean_loss"] is None  # strict JSON: null for NaN
    assert DIVERGED not in history["1"]
    assert "test/clean_error" not in history["2"]  # a diverged epoch is not tested

    # Resuming (here with a model that does not diverge) continues from epoch 1.
    resumed = RunDirectory(tmp_path, seed=0)
    resumed.model_config = MLP_CONFIG
    try:
        fit().fit(PoisonedMLP(poison_at=10**9), tiny_data, resumed)
    finally:
        resumed.close()
    assert finite_weights(resumed.last_checkpoint) == (2, True)
    assert DIVERGED not in resumed.history()["2"]


def test_a_huge_lr_stops_the_command_with_one_line_and_a_failing_status(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [
        "experiment=quickstart",
        "trainer.epochs=2",
        "trainer.optimizer.lr=1e6",
        "dataset.train_first=256",
        "attack.steps=1",
        "evaluation=quick",
        "device=cpu",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    command = [sys.executable, "-m", "advflat.cli.train", *overrides]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    lines = [line for line in output.splitlines() if "training diverged" in line]
    assert len(lines) == 1, output
    message = lines[0].split(" - ", 1)[-1]  # after Hydra's "[time][advflat][ERROR] - "
    assert message.startswith("training diverged at epoch 1, batch "), message
    assert "lr 1e+06): lower trainer.optimizer.lr" in message
    assert message.endswith("no epoch finished, so nothing was saved")
    assert "Traceback" not in output
    history = json.loads((run_dir / "history.json").read_text())
    assert history["1"][DIVERGED] == 1
    assert not (run_dir / "checkpoints" / "last.pt").exists()  # no good epoch to keep
    assert not (run_dir / "metrics.json").exists()  # not a finished run: it may be resumed
