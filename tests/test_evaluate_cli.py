"""advflat-eval: evaluate existing snapshots without retraining, with the run's own config."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from advflat.cli.eval_config import with_overrides
from advflat.cli.evaluate import main
from advflat.core.config import build
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
    # ... measured under the run's threat model, not the packaged (CIFAR) one.
    assert group["evaluation"]["epsilon"] == 0.2 and group["evaluation"]["step_size"] == 0.05
    pgd = group["evaluation"]["metrics"]["pgd"]["attack"]
    assert pgd["steps"] == 20 and pgd["epsilon"] == 0.2 and pgd["step_size"] == 0.05
    assert group["dataset"] == stored["dataset"]
    both = with_overrides(stored, ["evaluation=paper", "evaluation.metrics.pgd.attack.steps=3"])
    assert both["evaluation"]["metrics"]["pgd"]["attack"]["steps"] == 3


def test_an_unknown_override_key_is_a_one_line_error_naming_the_nearest_keys(trained_run):
    stored = torch.load(trained_run / "checkpoints/final.pt", weights_only=True)["config"]
    with pytest.raises(ValueError, match="unknown key evaluation.nope; evaluation has ") as error:
        with_overrides(stored, ["evaluation.nope=1"])
    assert "\n" not in str(error.value) and "(+evaluation.nope=... adds a new key)" in str(
        error.value
    )
    # A typo deep in a key is named at its first missing part, with the nearest keys there.
    with pytest.raises(ValueError, match="did you mean evaluation.metrics.pgd.attack[?]$"):
        with_overrides(stored, ["evaluation.metrics.pgd.atack.steps=3"])


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


# The quick protocol on few examples: what the threat-model tests evaluate with.
FEW = ["evaluation.metrics.pgd.first=50", "evaluation.metrics.train_pgd.first=50"]


def without_costs(metrics):
    return {key: value for key, value in metrics.items() if not key.startswith("cost/")}


def errors_logged(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_loose_checkpoint_is_evaluated_under_its_stored_threat_model_like_its_run(
    trained_run, tmp_path
):
    run = copy_of(trained_run, tmp_path / "run")
    loose = tmp_path / "model.pt"
    shutil.copy(run / "checkpoints/final.pt", loose)
    main([str(run), "evaluation=quick", *FEW])  # a group selection: CIFAR's ε in the package
    main([str(loose), "evaluation=quick", *FEW])
    in_run, alone = the_result(run / "checkpoints/final.pt"), the_result(loose)
    assert without_costs(alone) == without_costs(in_run)
    for metric in ["pgd", "train_pgd"]:
        assert alone[f"threat_model/{metric}/attack/epsilon"] == 0.2
        assert alone[f"threat_model/{metric}/attack/step_size"] == 0.05
        assert alone[f"threat_model/{metric}/attack/norm/linf"] == 1.0
    assert alone["evaluation/epsilon"] == 0.2 and alone["evaluation/step_size"] == 0.05


def test_an_epsilon_override_changes_every_attack_of_the_evaluation(trained_run):
    stored = torch.load(trained_run / "checkpoints/final.pt", weights_only=True)["config"]
    # As a run evaluated with the paper's protocol stores it: resolved, every attack at ε 0.2.
    paper = with_overrides(stored, ["evaluation=paper"])
    chosen = ["evaluation.epsilon=0.1", "evaluation.step_size=0.02"]
    evaluation = build(with_overrides(paper, chosen)["evaluation"], "evaluation")
    attacks = {
        f"{name}.{role}": attack
        for name, metric in evaluation.metrics.items()
        if metric is not None
        for role, attack in metric.input_attacks().items()
    }
    autoattack = attacks.pop("autoattack.attack")
    joint = attacks.pop("flatness_worst_robust.weight_attack")
    # Besides those two: PGD and the attacks inside flatness, Hessian and landscapes.
    assert {"pgd.attack", "train_pgd.attack", "flatness_average_robust.attack"} <= set(attacks)
    assert {"hessian_robust.attack", "landscape_random_robust.attack"} <= set(attacks)
    assert {role: (a.epsilon, a.step_size) for role, a in attacks.items()} == dict.fromkeys(
        attacks, (0.1, 0.02)
    )
    assert (joint.epsilon, joint.input_lr) == (0.1, 0.02)
    assert autoattack.epsilon == 0.1
    assert [c.epsilon for _, c in autoattack.components] == [0.1] * len(autoattack.components)


def test_an_epsilon_override_is_what_the_attacks_run_and_record(trained_run, tmp_path):
    run = copy_of(trained_run, tmp_path / "run")
    final = run / "checkpoints/final.pt"
    main([str(run)])
    main([str(run), "evaluation.epsilon=0.1"])
    results = {m["evaluation/epsilon"]: m for m in map(read_json_file, result_files(final))}
    assert sorted(results) == [0.1, 0.2]
    for epsilon, metrics in results.items():
        for metric in ["pgd", "train_pgd"]:
            assert metrics[f"threat_model/{metric}/attack/epsilon"] == epsilon
            assert metrics[f"threat_model/{metric}/attack/step_size"] == 0.05
    # Half the radius: fewer digits are turned (not only another label on the same numbers).
    assert results[0.1]["test/robust_error/pgd"] < results[0.2]["test/robust_error/pgd"]


def read_json_file(path):
    return json.loads(path.read_text())


def stripped_of_its_threat_model(checkpoint, destination):
    """A copy of ``checkpoint`` whose stored config has no evaluation.epsilon or step_size."""
    state = torch.load(checkpoint, weights_only=True)
    del state["config"]["evaluation"]["epsilon"], state["config"]["evaluation"]["step_size"]
    torch.save(state, destination)
    return destination


def test_a_loose_checkpoint_without_a_stored_threat_model_is_refused_in_one_line(
    trained_run, tmp_path, caplog
):
    loose = stripped_of_its_threat_model(trained_run / "checkpoints/final.pt", tmp_path / "m.pt")
    with pytest.raises(SystemExit) as exited:
        main([str(loose), "evaluation=quick"])  # the packaged ε is not a stand-in for the run's
    assert exited.value.code == 2
    errors = errors_logged(caplog)
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert f"checkpoint {loose} stores no threat model " in errors[0]
    assert "(evaluation.epsilon, evaluation.step_size): give it on the command line" in errors[0]
    assert result_files(loose) == []


def test_a_threat_model_on_the_command_line_evaluates_a_checkpoint_that_stores_none(
    trained_run, tmp_path
):
    run = copy_of(trained_run, tmp_path / "run")
    loose = stripped_of_its_threat_model(run / "checkpoints/final.pt", tmp_path / "m.pt")
    main([str(run), *FEW])
    main([str(loose), "evaluation.epsilon=0.2", "evaluation.step_size=0.05", *FEW])
    in_run, alone = the_result(run / "checkpoints/final.pt"), the_result(loose)
    assert without_costs(alone) == without_costs(in_run)
