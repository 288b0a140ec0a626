"""advflat-eval --model SOURCE: weights advflat did not train, in an architecture the command
line names, evaluated as ``advflat.evaluate`` would and written as a run folder."""

from __future__ import annotations

import json
import logging
import sys
import types

import pytest
import torch
from torch import nn

import advflat
from advflat.cli.eval_config import packaged_config
from advflat.cli.evaluate import main
from advflat.core.errors import ConfigError
from advflat.evaluation.external_weights import load_into
from advflat.evaluation.snapshot_results import result_files
from advflat.models.factory import model_source
from advflat.report.collect import gather
from advflat.training.checkpoint import save_model

MODULE = "advflat_test_models"  # written into a temporary folder, imported from there
SOURCE = f"{MODULE}:tiny_cnn"
CODE = '''
import torch
from torch import nn


class Tiny(nn.Module):
    """A model class of the user's own: 8×8 grey images, 10 classes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).flatten(1))


def tiny_cnn():
    return Tiny()
'''
# Digits, the quick protocol on few examples at the digits' ε: well under a second.
DATA = ["dataset.train_first=60", "dataset.test_first=40"]
SMALL = ["evaluation.epsilon=0.2", "evaluation.step_size=0.05"]
SMALL += ["evaluation.metrics.pgd.first=30", "evaluation.metrics.train_pgd.first=30"]
SMALL += ["evaluation.metrics.pgd.attack.steps=3", "evaluation.metrics.train_pgd.attack.steps=3"]
OVERRIDES = ["dataset=digits", *DATA, "evaluation=quick", *SMALL, "device=cpu"]


def without_costs(metrics):
    return {key: value for key, value in metrics.items() if not key.startswith("cost/")}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """A folder holding the user's module and the weights of its model."""
    folder = tmp_path_factory.mktemp("user")
    (folder / f"{MODULE}.py").write_text(CODE)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setattr(sys, "path", list(sys.path))
        module = model_source(SOURCE).factory()
        torch.manual_seed(0)
        model = module().eval()
        torch.save(model.state_dict(), folder / "weights.pt")
        yield folder
    sys.modules.pop(MODULE, None)


@pytest.fixture(scope="module")
def evaluated(models_dir, tmp_path_factory):
    """`advflat-eval --model` of the weights into an --out folder, run in-process."""
    out = tmp_path_factory.mktemp("evals") / "tiny"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(models_dir)
        patch.setattr(sys, "path", list(sys.path))
        main(["--model", SOURCE, "weights.pt", *OVERRIDES, "--out", str(out)])
    return out


def the_model(folder):
    module = sys.modules[MODULE]
    model = module.tiny_cnn()
    model.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
    return model.eval()


def error_of(argv, caplog):
    """The one error line advflat-eval ends with (exit status 2)."""
    caplog.clear()
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    return errors[0]


def test_a_module_factory_gives_the_metrics_advflat_evaluate_gives(evaluated, in_models_dir):
    written = json.loads((evaluated / "metrics.json").read_text())
    expected = advflat.evaluate(
        the_model(in_models_dir), "digits", "quick", overrides=[*DATA, *SMALL]
    )
    assert set(written) == set(expected)
    assert without_costs(written) == without_costs(expected)  # same seeds, same numbers


def test_the_out_folder_records_where_the_model_came_from(evaluated):
    config = json.loads((evaluated / "config.json").read_text())
    assert config["model"]["source"] == SOURCE
    assert config["model"]["weights"] == "weights.pt" and len(config["model"]["sha256"]) == 64
    assert config["dataset"]["_target_"] == "advflat.data.Digits"
    assert config["evaluation"]["epsilon"] == 0.2
    assert (evaluated / ".hydra" / "overrides.yaml").read_text().startswith("- dataset=digits")


def test_advflat_report_reads_the_out_folder_as_a_run(evaluated):
    runs, notes = gather(evaluated.parent)
    assert notes == [] and [run.path for run in runs] == [evaluated]
    written = json.loads((evaluated / "metrics.json").read_text())
    assert runs[0].metrics["test/robust_error/pgd"] == written["test/robust_error/pgd"]
    assert runs[0].config["name"] == f"{SOURCE} (weights.pt)"  # the report's row label


def test_the_same_evaluation_again_is_skipped_and_another_into_its_folder_refused(
    evaluated, in_models_dir, caplog
):
    caplog.set_level(logging.INFO)
    before = (evaluated / "metrics.json").stat().st_mtime_ns
    main(["--model", SOURCE, "weights.pt", *OVERRIDES, "--out", str(evaluated)])
    assert "already evaluated (use --force to redo)" in caplog.text
    assert (evaluated / "metrics.json").stat().st_mtime_ns == before
    other = ["--model", SOURCE, "weights.pt", *OVERRIDES, "evaluation.seed=1"]
    message = error_of([*other, "--out", str(evaluated)], caplog)
    assert "holds another evaluation (config.json differs in evaluation.seed" in message


def test_torchvision_models_are_built_by_get_model_with_the_class_count(monkeypatch):
    calls = []

    def get_model(name, weights, num_classes):
        calls.append((name, weights, num_classes))
        return nn.Linear(2, num_classes)

    fake = types.SimpleNamespace(get_model=get_model)
    monkeypatch.setitem(sys.modules, "torchvision.models", fake)
    assert model_source("torchvision:resnet18").build(7).out_features == 7
    assert calls == [("resnet18", None, 7)]  # untrained: the weights come from the file


@pytest.mark.slow  # importing torchvision.models takes seconds
def test_torchvision_resnet18_has_the_dataset_class_count_and_its_keys():
    model = model_source("torchvision:resnet18").build(7)
    assert model.fc.out_features == 7
    load_into(model, model.state_dict(), "resnet18.pt", "torchvision:resnet18")  # keys fit
    with pytest.raises(ConfigError, match="torchvision:nope: building it failed: Unknown model"):
        model_source("torchvision:nope").build(7)


def test_timm_models_are_built_through_create_model(monkeypatch):
    calls = []

    def create_model(name, pretrained, num_classes):
        calls.append((name, pretrained, num_classes))
        return nn.Linear(2, num_classes)

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    model = model_source("timm:vit_tiny").build(5)
    assert calls == [("vit_tiny", False, 5)] and model.out_features == 5


def test_without_timm_the_message_says_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` then fails
    with pytest.raises(ConfigError) as raised:
        model_source("timm:vit_tiny").build(5)
    assert str(raised.value) == (
        "--model timm:vit_tiny needs the timm package, which is not installed (pip install timm)"
    )


def test_weights_with_other_keys_are_a_one_line_error_naming_them(in_models_dir, caplog):
    state = torch.load("weights.pt", weights_only=True)
    state["fc.weight"] = state.pop("head.weight")
    torch.save({"state_dict": state}, "renamed.pt")  # a common layout: read, then refused
    message = error_of(["--model", SOURCE, "renamed.pt", *OVERRIDES], caplog)
    assert message.endswith(
        f"weights file renamed.pt does not fit --model {SOURCE}: missing keys head.weight; "
        "unexpected keys fc.weight"
    )
    state = torch.load("weights.pt", weights_only=True)
    state["head.weight"] = state["head.weight"][:5]
    torch.save(state, "narrow.pt")
    message = error_of(["--model", SOURCE, "narrow.pt", *OVERRIDES], caplog)
    assert (
        "narrow.pt does not fit --model" in message and "size mismatch for head.weight" in message
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("no_such_module:f", "--model no_such_module:f: no module named 'no_such_module' in"),
        (f"{MODULE}:absent", f"module '{MODULE}' has no class or function 'absent'"),
        ("tiny_cnn", "--model must be MODULE:FACTORY, torchvision:NAME, timm:NAME or robustbench"),
    ],
)
def test_a_source_that_names_nothing_is_a_one_line_error(in_models_dir, caplog, source, message):
    assert message in error_of(["--model", source, "weights.pt", *OVERRIDES], caplog)


def test_the_dataset_must_be_named(in_models_dir, caplog):
    message = error_of(["--model", SOURCE, "weights.pt", "evaluation=quick"], caplog)
    assert "give the dataset the weights are evaluated on, dataset=NAME" in message


def test_a_class_named_in_the_file_is_never_imported(in_models_dir, tmp_path, caplog):
    # A module whose import would leave a mark, named by the file only.
    (tmp_path / "planted.py").write_text("open('imported', 'w').close()\nclass Boom: pass\n")
    state = torch.load("weights.pt", weights_only=True)
    torch.save({"model": state, "model_config": {"_target_": "planted.Boom"}}, tmp_path / "w.pt")
    sys.path.insert(0, str(tmp_path))  # importable, were anything to import it
    # Without --model: refused; with it: --model's architecture holds the file's weights.
    assert "refusing to build 'planted.Boom'" in error_of([str(tmp_path / "w.pt")], caplog)
    main(["--model", SOURCE, str(tmp_path / "w.pt"), *OVERRIDES])
    assert "planted" not in sys.modules and not (in_models_dir / "imported").exists()
    # Without --out: a folder of its own under outputs/evals/, named by the weights and a hash.
    (folder,) = (in_models_dir / "outputs" / "evals").glob("w-*")
    assert (folder / "metrics.json").is_file()


def test_a_plain_state_dict_without_model_is_told_to_name_its_architecture(in_models_dir, caplog):
    message = error_of(["weights.pt"], caplog)
    assert "holds weights without an advflat model config" in message
    assert "advflat-eval --model MODULE:FACTORY weights.pt dataset=NAME" in message


def test_a_checkpoint_of_a_user_class_is_evaluated_with_its_stored_config(
    evaluated, in_models_dir, caplog
):
    config = packaged_config(["dataset=digits", *DATA, "evaluation=quick", *SMALL], resolve=True)
    config["model"] = {"_target_": f"{MODULE}.Tiny"}
    checkpoint = in_models_dir / "tiny_run.pt"
    save_model(checkpoint, the_model(in_models_dir), {"_target_": f"{MODULE}.Tiny"}, 3, config)
    assert "refusing to build" in error_of([str(checkpoint)], caplog)  # not trusted unnamed
    main(["--model", f"{MODULE}:Tiny", str(checkpoint)])
    (written,) = result_files(checkpoint)
    metrics = json.loads(written.read_text())
    # The same weights, data and evaluation as the --model evaluation of the weights file.
    expected = json.loads((evaluated / "metrics.json").read_text())
    assert without_costs(metrics) == {**without_costs(expected), "epoch": 3}


def test_advflat_evaluate_refuses_a_sweep_like_advflat_eval(in_models_dir):
    with pytest.raises(ConfigError, match="evaluation.epsilon=0.1,0.2: an evaluation takes one"):
        advflat.evaluate(
            the_model(in_models_dir), "digits", "quick", overrides=["evaluation.epsilon=0.1,0.2"]
        )
