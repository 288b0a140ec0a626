"""A model class of the user's own trains, resumes and is read back, trusted only on the command
line: re-running the training command (its ``model._target_``) or ``advflat resume=RUN --model
MODULE:CLASS``. A file naming any other importable target is refused and imports nothing."""

from __future__ import annotations

import functools
import itertools
import json
import logging
import shutil
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import advflat
from advflat.cli import train
from advflat.cli.resume import resume_folder, resumed_config, split_model_flag
from advflat.cli.run_folder import composed_config
from advflat.core.errors import ConfigError
from advflat.models.registry import build_model, model_class, trusted_class
from advflat.runs.pipeline import run_experiment
from advflat.training import checkpoint
from advflat.training.run_directory import RunDirectory

USER_MODULE, SENTINEL = "advflat_user_tiny", "advflat_user_sentinel"
USER_CLASS = f"{USER_MODULE}.Tiny"
# A model class of the user's own, taking the keys the mlp model config sets.
USER_SOURCE = """
from torch import nn


class Tiny(nn.Module):
    def __init__(self, num_classes, input_shape, mean=None, std=None, hidden=(8,),
                 normalization="none", activation="relu"):
        super().__init__()
        channels, height, width = input_shape
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width, hidden[0]))
        self.head = nn.Linear(hidden[0], num_classes)

    def forward(self, x):
        return self.head(self.body(x).relu())


Alias = Tiny
"""
# Importing the sentinel leaves a file beside it: proof that a file's _target_ imported it.
SENTINEL_SOURCE = """
from pathlib import Path

Path(__file__).with_name("sentinel_imported").touch()


class Tiny:
    pass
"""
# The digits quickstart shrunk to a second: a 2-epoch clean run of the user's model.
OVERRIDES = ["experiment=quickstart", "trainer=normal", "trainer.epochs=2", "device=cpu"]
OVERRIDES += ["trainer.scheduler.milestones=[2]", "trainer.snapshot_every=0"]
OVERRIDES += ["dataset.train_first=128", "dataset.test_first=64", "evaluation=quick"]
OVERRIDES += ["evaluation.metrics.pgd.first=16", "evaluation.metrics.train_pgd.first=16"]
OVERRIDES += [
    "evaluation.metrics.pgd.attack.steps=2",
    "evaluation.metrics.train_pgd.attack.steps=2",
]
OVERRIDES += ["model=mlp", "model.hidden=[8]", f"model._target_={USER_CLASS}"]


class PreemptedError(Exception):
    pass


@pytest.fixture(scope="module")
def user_models(tmp_path_factory):
    """A folder on sys.path with the user's model module and the sentinel module."""
    folder = tmp_path_factory.mktemp("user_models")
    (folder / f"{USER_MODULE}.py").write_text(USER_SOURCE)
    (folder / f"{SENTINEL}.py").write_text(SENTINEL_SOURCE)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))
        yield folder
    for name in (USER_MODULE, SENTINEL):
        sys.modules.pop(name, None)


@functools.cache
def composed() -> dict:
    """The training command's config, composed once (composing costs more than the run)."""
    config = composed_config(OVERRIDES)
    assert config is not None
    return config


def config():
    return OmegaConf.create(composed())


@pytest.fixture(scope="module")
def interrupted(user_models, tmp_path_factory):
    """A run of the user's model stopped right after saving epoch 1 of 2 (like a preempted job)."""
    run_dir = tmp_path_factory.mktemp("interrupted") / "run"
    save = checkpoint.save

    def save_then_stop(trainer, model, run, epoch):
        save(trainer, model, run, epoch)
        raise PreemptedError

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoint, "save", save_then_stop)
        with pytest.raises(PreemptedError):
            run_experiment(config(), run_dir)
    return run_dir


@pytest.fixture
def run_dir(interrupted, tmp_path):
    """This test's own copy of the interrupted run."""
    return Path(shutil.copytree(interrupted, tmp_path / "run"))


def last_epoch(run_dir: Path) -> int:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"]


def assert_trained_on_from_epoch_1(run_dir: Path, interrupted: Path) -> None:
    history = json.loads((run_dir / "history.json").read_text())
    before = json.loads((interrupted / "history.json").read_text())
    assert sorted(history) == ["1", "2"]
    assert history["1"] == before["1"]  # epoch 1 is the stored one, not trained again
    assert last_epoch(run_dir) == 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "test/clean_error" in metrics and "test/robust_error/pgd" in metrics


def test_rerunning_the_training_command_resumes_a_user_model_whose_final_model_needs_trust(
    run_dir, interrupted, caplog
):
    assert last_epoch(run_dir) == 1
    with caplog.at_level(logging.INFO):
        metrics = run_experiment(config(), run_dir)
    assert f"resuming from {run_dir / 'checkpoints' / 'last.pt'} after epoch 1" in caplog.text
    assert_trained_on_from_epoch_1(run_dir, interrupted)
    # The end-of-training evaluation of the final model is the one written.
    written = json.loads((run_dir / "metrics.json").read_text())
    assert written["test/clean_error"] == pytest.approx(metrics["test/clean_error"])
    final = run_dir / "checkpoints" / "final.pt"
    tiny = trusted_class(f"{USER_MODULE}:Tiny")
    assert type(checkpoint.load_model(final, trusted=tiny)) is tiny
    assert type(advflat.load_model(final, trusted=tiny)) is tiny
    assert checkpoint.stored_config(checkpoint.read(final, tiny), final, tiny) is not None
    with pytest.raises(ConfigError, match="refusing to build 'advflat_user_tiny.Tiny'"):
        checkpoint.read(final)


def test_advflat_resume_without_the_model_flag_is_one_line_and_changes_nothing(
    run_dir, monkeypatch, capsys
):
    before = (run_dir / "checkpoints" / "last.pt").read_bytes()
    monkeypatch.setattr(sys, "argv", ["advflat", f"resume={run_dir}"])
    with pytest.raises(SystemExit) as stopped:
        train.main()
    assert stopped.value.code == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "Traceback" not in message
    assert "'advflat_user_tiny.Tiny'" in message and "--model MODULE:CLASS" in message
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == before
    assert not (run_dir / "metrics.json").exists()


def keep_logging(run_dir: Path) -> None:
    """Stands in for ``log_to``, which would reroute this test process's logging."""


def test_advflat_resume_with_the_model_flag_trains_on_from_the_stored_epoch(
    run_dir, interrupted, monkeypatch
):
    monkeypatch.setattr(train, "log_to", keep_logging)
    monkeypatch.setattr(sys, "argv", ["advflat", f"resume={run_dir}", "--model", USER_CLASS])
    train.main()
    assert_trained_on_from_epoch_1(run_dir, interrupted)


def test_the_model_flag_must_name_the_runs_own_class(run_dir):
    with pytest.raises(ConfigError, match="nor is it the model class named on the command line"):
        resumed_config(run_dir, torch.nn.Linear)


@pytest.mark.parametrize(
    ("args", "spec"),
    [
        (["resume=run"], None),
        (["resume=run", "--model", "mymodels:Tiny"], "mymodels:Tiny"),
        (["--model=mymodels.Tiny", "resume=run"], "mymodels.Tiny"),
    ],
)
def test_resume_takes_a_model_flag_beside_the_run_folder(args, spec):
    assert resume_folder(args) == Path("run")
    assert split_model_flag(args) == (["resume=run"], spec)


@pytest.mark.parametrize("args", [["resume=run", "--model"], ["resume=run", "--model", "-x"]])
def test_a_model_flag_without_a_class_is_one_line(args):
    with pytest.raises(ConfigError, match="--model needs a model class"):
        resume_folder(args)


@pytest.mark.parametrize("spec", [f"{USER_MODULE}:Tiny", f"{USER_MODULE}.Tiny"])
def test_a_command_line_class_is_imported_by_module_and_name(user_models, spec):
    assert trusted_class(spec).__name__ == "Tiny"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("Tiny", "must be given as MODULE:CLASS"),
        ("advflat_no_such_module:Tiny", "no module named 'advflat_no_such_module'"),
        (f"{USER_MODULE}:Missing", "has no class or function 'Missing'"),
        ("os:system", "not a torch.nn.Module class"),
    ],
)
def test_a_bad_command_line_class_is_one_line(user_models, spec, message):
    with pytest.raises(ConfigError, match=message) as raised:
        trusted_class(spec)
    assert "\n" not in str(raised.value)


def test_a_trusted_class_is_given_only_plain_arguments_of_its_own(user_models):
    tiny = trusted_class(f"{USER_MODULE}:Tiny")
    good = {"_target_": USER_CLASS, "num_classes": 3, "input_shape": [1, 4, 4], "hidden": [4]}
    assert model_class(good, tiny) is tiny
    assert build_model(good, tiny)(torch.zeros(2, 1, 4, 4)).shape == (2, 3)
    with pytest.raises(ConfigError, match="model_config.width is not an argument of"):
        model_class({**good, "width": 2}, tiny)
    with pytest.raises(ConfigError, match="model_config.hidden is a nested config node"):
        model_class({**good, "hidden": {"_target_": "os.system"}}, tiny)


def test_a_class_named_by_another_module_than_its_own_is_not_trusted(user_models):
    tiny = trusted_class(f"{USER_MODULE}:Alias")
    with pytest.raises(ConfigError, match="by the module defining it"):
        model_class({"_target_": f"{USER_MODULE}.Alias"}, tiny)


def hostile_checkpoint(folder: Path, target: str) -> Path:
    """A last.pt (and its run config) whose model is ``target``, with the user model's weights."""
    (folder / "checkpoints").mkdir(parents=True)
    model_config = {"_target_": target, "num_classes": 3, "input_shape": [1, 4, 4]}
    weights = build_model({**model_config, "_target_": USER_CLASS}, trusted_class(USER_CLASS))
    config = {"seed": 0, "model": model_config}
    state = {"epoch": 1, "model": weights.state_dict(), "model_config": model_config}
    path = folder / "checkpoints" / "last.pt"
    torch.save({**state, "config": config}, path)
    return path


@pytest.mark.parametrize("target", [f"{SENTINEL}.Tiny", "os.system", "subprocess.Popen"])
def test_a_file_naming_an_importable_target_is_refused_and_imports_nothing(
    user_models, tmp_path, target
):
    path = hostile_checkpoint(tmp_path, target)
    tiny = trusted_class(USER_CLASS)
    loads = [(checkpoint.read, path), (resumed_config, tmp_path)]
    for (load, where), trusted in itertools.product(loads, [None, tiny]):
        with pytest.raises(ConfigError, match=f"'{target}'") as raised:
            load(where, trusted)
        assert "\n" not in str(raised.value)
    assert SENTINEL not in sys.modules
    assert not (user_models / "sentinel_imported").exists()


def test_a_file_naming_the_user_class_is_refused_until_the_class_is_trusted(user_models, tmp_path):
    path = hostile_checkpoint(tmp_path, USER_CLASS)
    with pytest.raises(ConfigError, match="refusing to build 'advflat_user_tiny.Tiny'"):
        checkpoint.read(path)
    with pytest.raises(ConfigError, match="--model MODULE:CLASS"):
        resumed_config(tmp_path)
    assert checkpoint.read(path, trusted_class(USER_CLASS))["epoch"] == 1


def test_a_run_whose_target_is_not_its_class_by_its_own_module_is_warned_of_at_the_start(
    user_models, tmp_path, caplog
):
    tiny = trusted_class(USER_CLASS)
    run = RunDirectory(tmp_path)
    run.model_config = {"_target_": f"{USER_MODULE}.Alias", "num_classes": 3}
    model = tiny(num_classes=3, input_shape=[1, 4, 4])
    checkpoint.warn_unless_resumable(model, run)
    assert "can be resumed and evaluated only when model._target_ names" in caplog.text
    caplog.clear()
    run.model_config = {"_target_": USER_CLASS, "num_classes": 3}
    checkpoint.warn_unless_resumable(model, run)
    assert caplog.text == ""


@pytest.mark.parametrize(
    "extra",
    [
        [
            "trainer/early_stopping=heldout",
            "trainer.early_stopping.last=32",
            "trainer.early_stopping.attack.restarts=1",
        ],
        ["evaluate_snapshots=true", "trainer.snapshot_every=1"],
    ],
    ids=["early_stopping_reads_best_pt", "snapshots_are_evaluated"],
)
def test_a_user_model_run_reads_its_own_best_and_snapshot_checkpoints(user_models, tmp_path, extra):
    overrides = [o for o in OVERRIDES if not o.startswith("trainer.snapshot_every")] + extra
    config = composed_config(overrides)
    assert config is not None
    metrics = run_experiment(OmegaConf.create(config), tmp_path / "run")
    assert "test/clean_error" in metrics
