"""What advflat writes is strict JSON, and a full or read-only disk is one line that overwrites
nothing (the atomic write helpers and every command)."""

from __future__ import annotations

import errno
import json
import logging
import math
from pathlib import Path

import pytest
import torch

import advflat.core.io
from advflat.cli.train import sweep_value
from advflat.core.io import WriteError, mount_point, save_json, save_text, save_torch
from advflat.core.strict_json import metrics_for_json
from advflat.evaluation.checkpoints import evaluate_checkpoint
from advflat.evaluation.snapshot_results import result_path
from advflat.training.run_directory import RunDirectory
from tests.test_hardening_paths import DIGITS, crafted_run, evaluation_with


def refuse(constant: str) -> None:
    raise ValueError(f"not strict JSON: {constant}")


def strict_load(path: Path):
    return json.loads(path.read_text(), parse_constant=refuse)


def test_non_finite_metrics_are_written_as_null_with_a_diagnostics_entry_naming_the_key(tmp_path):
    run = RunDirectory(tmp_path, config={"seed": 0})
    metrics = {"a": math.nan, "b": math.inf, "c": -math.inf, "d": 0.25, "e": 3}
    run.write_metrics(metrics_for_json(metrics))
    assert strict_load(run.metrics_file) == {
        "a": None,
        "b": None,
        "c": None,
        "d": 0.25,
        "e": 3,
        "diagnostics/non_finite/a": 1,
        "diagnostics/non_finite/b": 1,
        "diagnostics/non_finite/c": 1,
    }


def test_any_json_file_advflat_writes_is_strict_even_with_nested_non_finite_values(tmp_path):
    save_json(tmp_path / "h.json", {"1": {"loss": math.nan, "list": [1.0, math.inf]}})
    assert strict_load(tmp_path / "h.json") == {"1": {"loss": None, "list": [1.0, None]}}


class NonFiniteEvaluation:
    """Stands in for an evaluation whose robust loss diverged."""

    def write_files_to(self, directory: Path) -> NonFiniteEvaluation:
        return self

    def __call__(self, model, data) -> dict[str, float]:
        return {"test/robust_loss/pgd": math.nan, "test/clean_error": 0.5}


def test_an_evaluation_result_file_is_strict_json(tmp_path, tiny_data):
    config = {"seed": 0, "device": "cpu", "dataset": DIGITS, "evaluation": evaluation_with()}
    checkpoint = crafted_run(tmp_path / "run", config) / "checkpoints" / "final.pt"
    evaluate_checkpoint(checkpoint, NonFiniteEvaluation(), {"x": 1}, tiny_data)
    written = strict_load(result_path(checkpoint, {"x": 1}))
    assert written["test/robust_loss/pgd"] is None
    assert written["diagnostics/non_finite/test/robust_loss/pgd"] == 1


def test_the_sweep_value_of_a_null_or_missing_metric_is_nan():
    assert math.isnan(sweep_value({"m": None}, "m")) and math.isnan(sweep_value({}, "m"))
    assert sweep_value({"m": 0.25}, "m") == 0.25


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_one_line_and_the_old_file_stays(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    save_json(path, {"old": 1})
    monkeypatch.setattr(advflat.core.io.os, "fsync", disk_full)
    with pytest.raises(WriteError) as raised:
        save_json(path, {"new": 2})
    device = mount_point(tmp_path)
    assert str(raised.value) == (
        f"no space left on {device} while writing {path}; nothing was overwritten"
    )
    assert json.loads(path.read_text()) == {"old": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no .tmp left


def test_torchs_failed_zip_write_is_the_same_one_line(tmp_path, monkeypatch):
    def torch_disk_full(data, handle):
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed")

    path = tmp_path / "last.pt"
    save_torch(path, {"epoch": 1})
    monkeypatch.setattr(advflat.core.io.torch, "save", torch_disk_full)
    with pytest.raises(WriteError, match=r"^no space left on .* while writing .*last\.pt; nothing"):
        save_torch(path, {"epoch": 2})
    assert torch.load(path, weights_only=True) == {"epoch": 1}


def test_a_read_only_disk_is_one_line(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(advflat.core.io.tempfile, "mkstemp", read_only)
    with pytest.raises(WriteError, match="is a read-only file system: could not write"):
        save_text(tmp_path / "table.md", "x")


def test_other_write_errors_pass_unchanged(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(advflat.core.io.os, "fsync", denied)
    with pytest.raises(PermissionError):
        save_text(tmp_path / "x.txt", "x")


def test_advflat_eval_on_a_full_disk_exits_with_one_line(tmp_path, monkeypatch, caplog):
    from advflat.cli.evaluate import main

    config = {"seed": 0, "device": "cpu", "dataset": DIGITS, "evaluation": evaluation_with()}
    run = crafted_run(tmp_path / "run", config)
    monkeypatch.setattr(advflat.core.io.os, "fsync", disk_full)
    with pytest.raises(SystemExit) as exited:
        main([str(run)])
    assert exited.value.code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "no space left on" in errors[0] and "\n" not in errors[0]


def test_advflat_report_on_a_full_disk_exits_with_one_line(tmp_path, monkeypatch, caplog):
    from advflat.cli.report import main

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text('{"test/clean_error": 0.5}')
    monkeypatch.setattr(advflat.core.io.os, "fsync", disk_full)
    with pytest.raises(SystemExit) as exited:
        main([str(tmp_path)])
    assert exited.value.code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "no space left on" in errors[0]


def test_the_report_reads_a_null_metric_back_as_nan(tmp_path):
    from advflat.report.collect import collect

    run = tmp_path / "run"
    run.mkdir()
    save_json(run / "metrics.json", metrics_for_json({"test/robust_loss/pgd": math.nan}))
    save_json(run / "history.json", {"1": {"train/loss": math.inf}})
    [found] = collect(tmp_path)
    assert math.isnan(found.metrics["test/robust_loss/pgd"])
    assert found.metrics["diagnostics/non_finite/test/robust_loss/pgd"] == 1
    assert math.isnan(found.history[1]["train/loss"])


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (WriteError("no space left on / while writing x; nothing was overwritten"), 2),
        (OSError(errno.ENOSPC, "No space left on device", "/run/tensorboard/events"), 1),
    ],
)
def test_advflat_on_a_full_disk_exits_with_one_line(tmp_path, monkeypatch, caplog, error, status):
    import advflat.cli.train as train

    def full_disk(cfg, out_dir):
        raise error

    monkeypatch.setattr(train, "run_experiment", full_disk)
    with pytest.raises(SystemExit) as exited:
        train.run_alone(None, tmp_path / "run", [], new_folder=True)  # type: ignore[arg-type]
    assert exited.value.code == status
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith("no space left on ")
