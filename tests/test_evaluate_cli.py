"""advflat-eval: evaluate existing snapshots without retraining, with the run's own config."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from advflat.cli.eval_config import with_overrides
from advflat.cli.evaluate import main
from advflat.evaluation.snapshot_results import is_evaluated, result_files, result_path
from tests.test_cli import advflat

QUICK = ["evaluation=quick", "evaluation.epsilon=0.2", "evaluation.step_size=0.05"]
QUICK += ["evaluation.metrics.pgd.first=50", "evaluation.metrics.train_pgd.first=50"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("eval") / "run"
    overrides = ["experiment=quickstart", "trainer.epochs=2", "trainer.snapshot_every=1"]
    overrides += ["trainer.scheduler.milestones=[1]", *QUICK]
    result = advflat(*overrides, run_dir=run_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    return run_dir


def copy_of(run_dir, destination):
    """A run folder without its earlier evaluations (and without .hydra, like a moved run)."""
    shutil.copytree(run_dir, destination, ignore=shutil.ignore_patterns("*.json", ".hydra"))
    shutil.copy(run_dir / "metrics.json", destination / "metrics.json")
    return destination


def the_result(checkpoint):
    files = result_files(checkpoint)
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def test_every_snapshot_is_evaluated_and_written_beside_it(trained_run):
    main([str(trained_run), "--all"])  # no overrides: the run's stored evaluation config
    for name in ["epoch_001", "epoch_002", "final"]:
        metrics = the_result(trained_run / "checkpoints" / f"{name}.pt")
        assert 0 <= metrics["test/robust_error/pgd"] <= 1
    assert the_result(trained_run / "checkpoints/epoch_001.pt")["epoch"] == 1
    assert (trained_run / "curves.png").stat().st_size > 1000
    # The final model's evaluation equals the training run's own (same config, same seed).
    final = the_result(trained_run / "checkpoints/final.pt")
    trained = json.loads((trained_run / "metrics.json").read_text())
    assert final["test/robust_error/pgd"] == pytest.approx(trained["test/robust_error/pgd"])


def test_existing_results_are_skipped_unless_forced(trained_run, caplog):
    caplog.set_level(logging.INFO)
    checkpoint = trained_run / "checkpoints/epoch_001.pt"
    main([str(checkpoint)])
    path = result_files(checkpoint)[-1]
    before = path.stat().st_mtime_ns
    main([str(checkpoint)])
    assert path.stat().st_mtime_ns == before
    assert "already evaluated" in caplog.text
    main([str(checkpoint), "--force"])
    assert path.stat().st_mtime_ns != before


def test_an_unknown_device_is_refused_even_when_the_result_is_already_there(trained_run, caplog):
    checkpoint = trained_run / "checkpoints/epoch_001.pt"
    main([str(checkpoint)])  # the result now exists
    with pytest.raises(SystemExit) as exited:
        main([str(checkpoint), "device=tpu"])
    assert exited.value.code == 2
    assert "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'" in caplog.text


def test_another_evaluation_config_gets_its_own_file_and_leaves_the_first(trained_run, caplog):
    caplog.set_level(logging.INFO)
    checkpoint = trained_run / "checkpoints/epoch_002.pt"
    main([str(checkpoint)])
    first = result_files(checkpoint)
    mtime = first[0].stat().st_mtime_ns
    main([str(checkpoint), "evaluation.metrics.pgd.attack.steps=1"])
    both = result_files(checkpoint)
    assert len(both) == 2 and both[0] == first[0] and first[0].stat().st_mtime_ns == mtime
    weaker = json.loads(both[1].read_text())["test/robust_error/pgd"]
    stronger = json.loads(first[0].read_text())["test/robust_error/pgd"]
    assert weaker <= stronger  # PGD-1 never finds more adversarial examples than PGD-10
    caplog.clear()
    main([str(checkpoint)])  # the first config again: still there, skipped
    assert "already evaluated" in caplog.text and len(result_files(checkpoint)) == 2


def test_a_moved_run_is_evaluated_with_its_stored_config(trained_run, tmp_path):
    # No .hydra/overrides.yaml to replay: re-composing today's conf would pick CIFAR-10.
    moved = copy_of(trained_run, tmp_path / "moved")
    main([str(moved)])
    final = the_result(moved / "checkpoints/final.pt")
    trained = json.loads((trained_run / "metrics.json").read_text())
    assert final["test/robust_error/pgd"] == pytest.approx(trained["test/robust_error/pgd"])


def test_a_loose_checkpoint_uses_the_dataset_and_evaluation_it_carries(trained_run, tmp_path):
    loose = tmp_path / "model.pt"
    shutil.copy(trained_run / "checkpoints/final.pt", loose)
    main([str(loose)])
    trained = json.loads((trained_run / "metrics.json").read_text())
    metrics = the_result(loose)
    assert metrics["test/robust_error/pgd"] == pytest.approx(trained["test/robust_error/pgd"])
    assert metrics["evaluation/epsilon"] == pytest.approx(0.2)


def test_overrides_apply_on_top_of_the_stored_config(trained_run):
    stored = torch.load(trained_run / "checkpoints/final.pt", weights_only=True)["config"]
    value = with_overrides(stored, ["evaluation.metrics.pgd.attack.steps=5"])
    assert value["evaluation"]["metrics"]["pgd"]["attack"]["steps"] == 5
    assert value["evaluation"]["metrics"]["pgd"]["first"] == 50  # the rest stays as stored
    assert value["dataset"] == stored["dataset"]
    # A group selection takes the packaged node (the paper protocol has flatness metrics) ...
    group = with_overrides(stored, ["evaluation=paper"])
    assert "flatness_worst_robust" not in stored["evaluation"]["metrics"]
    assert "flatness_worst_robust" in group["evaluation"]["metrics"]
    assert group["evaluation"]["epsilon"] == pytest.approx(8 / 255)
    pgd = group["evaluation"]["metrics"]["pgd"]["attack"]
    assert pgd["steps"] == 20 and pgd["epsilon"] == pytest.approx(8 / 255)  # re-derived
    assert group["dataset"] == stored["dataset"]
    both = with_overrides(stored, ["evaluation=paper", "evaluation.metrics.pgd.attack.steps=3"])
    assert both["evaluation"]["metrics"]["pgd"]["attack"]["steps"] == 3


def test_an_unknown_override_key_is_a_one_line_error(trained_run):
    stored = torch.load(trained_run / "checkpoints/final.pt", weights_only=True)["config"]
    with pytest.raises(ValueError, match="has no key 'evaluation.nope'"):
        with_overrides(stored, ["evaluation.nope=1"])


def test_a_sweep_is_re_evaluated_run_by_run(trained_run, tmp_path):
    sweep = tmp_path / "sweep"
    runs = [copy_of(trained_run, sweep / name) for name in ["a", "b=1"]]
    main([str(sweep), "--all"])
    for run in runs:
        for name in ["epoch_001", "epoch_002", "final"]:
            assert len(result_files(run / "checkpoints" / f"{name}.pt")) == 1
        assert (run / "curves.png").exists()


def test_a_missing_path_and_a_folder_without_runs_are_told_apart(tmp_path, caplog):
    for path, message in [
        (tmp_path / "absent", f"no such file or folder: {tmp_path / 'absent'}"),
        (tmp_path, f"{tmp_path} holds no advflat run (no checkpoints/"),
    ]:
        caplog.clear()
        with pytest.raises(SystemExit) as exited:
            main([str(path)])
        assert exited.value.code == 2
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and message in errors[0] and "\n" not in errors[0]


def test_weights_that_do_not_match_the_stored_model_config_are_a_one_line_error(
    trained_run, tmp_path, caplog
):
    run = copy_of(trained_run, tmp_path / "run")
    state = torch.load(run / "checkpoints/final.pt", weights_only=True)
    state["model_config"]["num_classes"] = 7
    torch.save(state, run / "checkpoints/final.pt")
    with pytest.raises(SystemExit) as exited:
        main([str(run)])
    assert exited.value.code == 2
    assert "its weights do not match its model config (size mismatch for" in caplog.text
    assert not is_evaluated(run / "checkpoints/final.pt", state["config"]["evaluation"])
    assert not result_path(run / "checkpoints/final.pt", state["config"]["evaluation"]).exists()


def test_a_checkpoint_without_a_stored_config_is_refused_even_beside_a_config_json(
    trained_run, tmp_path, caplog
):
    run = copy_of(trained_run, tmp_path / "run")
    state = torch.load(run / "checkpoints/final.pt", weights_only=True)
    config = state.pop("config")
    torch.save(state, run / "checkpoints/final.pt")
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit) as exited:
        main([str(run)])
    assert exited.value.code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "final.pt carries no run config" in errors[0], errors
    assert result_files(run / "checkpoints/final.pt") == []
