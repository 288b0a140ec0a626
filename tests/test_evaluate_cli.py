"""advflat-eval: evaluate existing snapshots without retraining, skip what is done."""

from __future__ import annotations

import json
import logging

import pytest

from advflat.cli.evaluate import main
from tests.test_cli import advflat

QUICK = ["evaluation=quick", "evaluation.epsilon=0.2", "evaluation.step_size=0.05"]
QUICK += ["evaluation.metrics.pgd.first=50", "evaluation.metrics.train_pgd.first=50"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("eval") / "run"
    overrides = ["experiment=quickstart", "trainer.epochs=2", "trainer.snapshot_every=1", *QUICK]
    result = advflat(*overrides, run_dir=run_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    return run_dir


def test_every_snapshot_is_evaluated_and_written_beside_it(trained_run):
    main([str(trained_run), "--all", *QUICK])
    for name in ["epoch_001", "epoch_002", "final"]:
        metrics = json.loads((trained_run / "checkpoints" / f"{name}.json").read_text())
        assert 0 <= metrics["test/robust_error/pgd"] <= 1
    assert json.loads((trained_run / "checkpoints/epoch_001.json").read_text())["epoch"] == 1
    assert (trained_run / "curves.png").stat().st_size > 1000
    # The final model's evaluation equals the training run's own (same config, same seed).
    final = json.loads((trained_run / "checkpoints/final.json").read_text())
    trained = json.loads((trained_run / "metrics.json").read_text())
    assert final["test/robust_error/pgd"] == pytest.approx(trained["test/robust_error/pgd"])


def test_existing_results_are_skipped_unless_forced(trained_run, caplog):
    caplog.set_level(logging.INFO)
    main([str(trained_run / "checkpoints/epoch_001.pt"), *QUICK])
    path = trained_run / "checkpoints/epoch_001.json"
    before = path.stat().st_mtime_ns
    main([str(trained_run / "checkpoints/epoch_001.pt"), *QUICK])
    assert path.stat().st_mtime_ns == before
    assert "already evaluated" in caplog.text
    main([str(trained_run / "checkpoints/epoch_001.pt"), "--force", *QUICK])
    assert path.stat().st_mtime_ns != before


def test_a_directory_without_checkpoints_is_a_one_line_error(tmp_path, caplog):
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
    assert "no checkpoints/final.pt" in caplog.text
