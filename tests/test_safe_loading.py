"""Nothing advflat reads back from disk can run code or touch files.

Every case crafts a hostile file whose payload would create ``OUT`` (a file or folder in
tmp_path) and checks, on disk, that loading refuses it with one line and creates nothing.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import pytest
import torch
import yaml

from advflat.attacks.autoattack_state import load_state
from advflat.core.errors import ConfigError
from advflat.core.loading import check_stored_config, shipped_targets
from advflat.data.pseudo_labelled import PseudoLabelled
from advflat.models import MLP
from advflat.models.registry import MODELS
from tests.conftest import CONF
from tests.setups import MLP_CONFIG


class MakesFolder:
    """Unpickling this object calls os.makedirs(path)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (os.makedirs, (self.path,))


def contents(folder: Path) -> list[Path]:
    return sorted(path.relative_to(folder) for path in folder.rglob("*"))


def weights() -> dict[str, torch.Tensor]:
    return MLP(num_classes=3, input_shape=[1, 4, 4], hidden=[16]).state_dict()


def write_checkpoint(path: Path, model_config: dict, **extra) -> Path:
    torch.save(
        {"format": 1, "epoch": 1, "model": weights(), "model_config": model_config, **extra}, path
    )
    return path


def assert_refused_without_effect(load, tmp_path: Path, out: Path, match: str = ".") -> str:
    before = contents(tmp_path)
    with pytest.raises(ConfigError, match=match) as raised:
        load()
    message = str(raised.value)
    assert "\n" not in message, message
    assert "weights_only" not in message and "False" not in message, message
    assert not out.exists()
    assert contents(tmp_path) == before
    return message


def nested_payloads(out: Path) -> dict[str, dict]:
    """Model configs whose nested node would write ``out`` if given to Hydra's instantiate."""
    return {
        "copyfile": {"_target_": "shutil.copyfile", "_args_": ["/etc/hostname", str(out)]},
        "open": {"_target_": "builtins.open", "_args_": [str(out), "w"]},
        "torch_save": {"_target_": "torch.save", "_args_": [1, str(out)]},
        "makedirs": {"_target_": "os.makedirs", "_args_": [str(out)]},
    }


def hostile_model_configs(out: Path) -> dict[str, dict]:
    configs = {
        f"nested_{name}": {**MLP_CONFIG, "activation": node}
        for name, node in nested_payloads(out).items()
    }
    configs["prefix_walk_torch_save"] = {
        "_target_": "advflat.models.layers.torch.save",
        "obj": 1,
        "f": str(out),
    }
    configs["prefix_walk_hub_load"] = {
        "_target_": "advflat.models.layers.torch.hub.load",
        "repo_or_dir": str(out),
        "model": "x",
        "source": "local",
    }
    configs["unknown_key"] = {**MLP_CONFIG, "payload": str(out)}
    configs["partial"] = {**MLP_CONFIG, "_partial_": True}
    configs["args"] = {**MLP_CONFIG, "_args_": [str(out)]}
    configs["recursive"] = {**MLP_CONFIG, "_recursive_": False}
    configs["convert"] = {**MLP_CONFIG, "_convert_": "all"}
    configs["nested_mean"] = {**MLP_CONFIG, "mean": {"_target_": "os.makedirs", "name": str(out)}}
    return configs


CASES = sorted(hostile_model_configs(Path("x")))


@pytest.mark.parametrize("case", CASES)
def test_load_model_refuses_every_hostile_model_config_and_creates_nothing(tmp_path, case):
    from advflat import load_model

    out = tmp_path / "created"
    path = write_checkpoint(tmp_path / "evil.pt", hostile_model_configs(out)[case])
    message = assert_refused_without_effect(lambda: load_model(path), tmp_path, out)
    assert str(path) in message


def test_the_refusal_names_the_offending_key(tmp_path):
    from advflat import load_model

    configs = hostile_model_configs(tmp_path / "created")
    for case, key in [("nested_open", "activation"), ("unknown_key", "payload"),
                      ("partial", "_partial_"), ("args", "_args_")]:  # fmt: skip
        path = write_checkpoint(tmp_path / f"{case}.pt", configs[case])
        with pytest.raises(ConfigError, match=f"model_config.{key} "):
            load_model(path)
    path = write_checkpoint(tmp_path / "walk.pt", configs["prefix_walk_torch_save"])
    with pytest.raises(ConfigError, match="refusing to build 'advflat.models.layers.torch.save'"):
        load_model(path)


def reduce_pickles(tmp_path: Path, out: Path) -> dict[str, Path]:
    """Files whose unpickling would call os.makedirs(out): torch.save, plain pickles."""
    payload = {"model": MakesFolder(out), "model_config": MLP_CONFIG, "epoch": 1}
    torch.save(payload, tmp_path / "torch_save.pt")
    (tmp_path / "pickle_2.pt").write_bytes(pickle.dumps(payload, protocol=2))
    (tmp_path / "pickle_5.pt").write_bytes(pickle.dumps(payload, protocol=5))
    return {name: tmp_path / f"{name}.pt" for name in ["torch_save", "pickle_2", "pickle_5"]}


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("torch_save", "holds objects other than tensors and plain values (os.makedirs); "
                       "advflat refuses to unpickle code."),
        ("pickle_2", "(os.makedirs); advflat refuses to unpickle code."),
        # torch's reader stops at the frame opcode, before reaching the call.
        ("pickle_5", "is corrupt or not an advflat checkpoint (not a pickle of tensors"),
    ],
)  # fmt: skip
def test_pickled_code_is_refused_without_torchs_advice_to_disable_the_protection(
    tmp_path, kind, expected
):
    from advflat import load_model

    out = tmp_path / "created"
    path = reduce_pickles(tmp_path, out)[kind]
    message = assert_refused_without_effect(lambda: load_model(path), tmp_path, out)
    assert expected in message


def test_autoattack_state_with_pickled_code_is_refused(tmp_path):
    out = tmp_path / "created"
    path = tmp_path / "autoattack_state.pt"
    torch.save({"fingerprint": {}, "x_adv": MakesFolder(out)}, path)
    assert_refused_without_effect(
        lambda: load_state(path, {}, torch.device("cpu")), tmp_path, out, "AutoAttack state"
    )


def test_autoattack_state_of_another_layout_is_a_one_line_error(tmp_path):
    path = tmp_path / "autoattack_state.pt"
    torch.save({"fingerprint": {}, "x_adv": torch.zeros(2), "robust": [True, False]}, path)
    with pytest.raises(ConfigError, match="no valid 'robust' entry"):
        load_state(path, {}, torch.device("cpu"))


def test_pseudo_labelled_pickle_with_code_creates_nothing(tmp_path):
    out = tmp_path / "created"
    path = tmp_path / "extra.pickle"
    path.write_bytes(pickle.dumps({"data": MakesFolder(out), "extrapolated_targets": [0]}))
    before = contents(tmp_path)
    with pytest.raises(ConfigError, match="refusing to load posix.makedirs|refusing to load os"):
        PseudoLabelled(path=str(path)).load()
    assert not out.exists() and contents(tmp_path) == before


def test_every_shipped_model_config_names_a_registered_model():
    targets = {yaml.safe_load(f.read_text())["_target_"] for f in (CONF / "model").glob("*.yaml")}
    assert targets == set(MODELS)


def test_stored_configs_may_name_only_targets_of_the_shipped_configs():
    assert {"advflat.data.Digits", "advflat.evaluation.Evaluation"} <= shipped_targets()
    assert "torch.save" not in shipped_targets()
    check_stored_config({"dataset": {"_target_": "advflat.data.Digits", "train_first": 3}}, "f")
    refused = {
        "target": {"dataset": {"_target_": "advflat.data.torch.save", "obj": 1}},
        "args": {"dataset": {"_target_": "advflat.data.Digits", "_args_": [1]}},
        "recursive": {"dataset": {"_target_": "advflat.data.Digits", "_recursive_": False}},
        "interpolation": {"seed": "${oc.env:HOME}"},
    }
    for case, config in refused.items():
        with pytest.raises(ConfigError, match="^f: ") as raised:
            check_stored_config(config, "f")
        assert "\n" not in str(raised.value), case


def hostile_run_configs(out: Path) -> dict[str, dict]:
    """config.json contents whose building would write ``out``."""
    payloads = nested_payloads(out)
    digits = {"_target_": "advflat.data.Digits", "train_first": 20, "test_first": 10}
    evaluation = {
        "_target_": "advflat.evaluation.Evaluation",
        "epsilon": 0.1,
        "step_size": 0.05,
        "seed": 0,
        "metrics": {"clean": {"_target_": "advflat.evaluation.CleanPerformance", "split": "test"}},
    }
    base = {"seed": 0, "device": "cpu", "dataset": digits, "evaluation": evaluation}
    configs = {
        "dataset_copyfile": {**base, "dataset": payloads["copyfile"]},
        "dataset_makedirs": {**base, "dataset": payloads["makedirs"]},
        "metric_torch_save": {
            **base,
            "evaluation": {**evaluation, "metrics": {"x": payloads["torch_save"]}},
        },
        "nested_open": {**base, "dataset": {**digits, "augmentation": payloads["open"]}},
        "prefix_walk": {
            **base,
            "dataset": {"_target_": "advflat.data.torch.save", "obj": 1, "f": str(out)},
        },  # fmt: skip
    }
    return configs


@pytest.mark.parametrize("case", sorted(hostile_run_configs(Path("x"))))
def test_advflat_eval_refuses_a_checkpoint_storing_a_poisoned_config_and_creates_nothing(
    tmp_path, case, caplog
):
    from advflat.cli.evaluate import main

    out = tmp_path / "created"
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    input_shape = [1, 8, 8]
    model_config = {**MLP_CONFIG, "num_classes": 10, "input_shape": input_shape}
    torch.save(
        {
            "format": 1,
            "epoch": 1,
            "model": MLP(num_classes=10, input_shape=input_shape, hidden=[16]).state_dict(),
            "model_config": model_config,
            "config": hostile_run_configs(out)[case],
        },
        run_dir / "checkpoints" / "final.pt",
    )
    caplog.set_level(logging.INFO)
    before = contents(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main([str(run_dir)])
    assert exited.value.code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert "final.pt" in errors[0]
    assert not out.exists() and contents(tmp_path) == before


def test_a_loose_checkpoint_with_a_poisoned_stored_config_is_refused(tmp_path, caplog):
    from advflat.cli.evaluate import main

    out = tmp_path / "created"
    config = hostile_run_configs(out)["dataset_makedirs"]
    path = write_checkpoint(tmp_path / "loose.pt", MLP_CONFIG, config=config)
    before = contents(tmp_path)
    with pytest.raises(SystemExit):
        main([str(path)])
    assert "dataset._args_ is not allowed" in caplog.text
    assert not out.exists() and contents(tmp_path) == before
