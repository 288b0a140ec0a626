"""``--model robustbench:[DATASET/][THREAT/]NAME``: RobustBench's zoo architectures, evaluated at
the dataset and threat model their entry records, weights from a file or RobustBench's loader.

The fast tests need no RobustBench; those that build a zoo architecture skip without it and
never download (the loader is handed a folder that holds the checkpoint already)."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch

from advflat.cli.evaluate import main
from advflat.cli.evaluate_weights import _chosen, evaluate_weights
from advflat.cli.zoo_threat_model import threat_overrides
from advflat.core.errors import ConfigError
from advflat.evaluation.external import composed
from advflat.models import robustbench_zoo
from advflat.models.factory import model_source
from advflat.models.robustbench_zoo import ThreatModel, ZooEntry, entry, fitted

# The smallest L2/Linf architecture of the zoo's CIFAR-10 entries (WRN-28-4, 5.8 M parameters).
SMALLEST = "cifar10/L2/Ding2020MMA"
needs_robustbench = pytest.mark.skipif(
    importlib.util.find_spec("robustbench") is None or importlib.util.find_spec("timm") is None,
    reason="RobustBench is not installed (pip install advflat[robustbench])",
)
TINY = ["evaluation=quick", "evaluation.metrics.pgd.attack.steps=2", "device=cpu"]
TINY += ["evaluation.metrics.train_pgd.attack.steps=2"]


def test_a_bare_name_is_robustbench_s_default_cifar10_linf_entry():
    assert entry("Standard") == ZooEntry("cifar10", "Linf", "Standard")
    assert entry("L2/Standard") == ZooEntry("cifar10", "L2", "Standard")
    assert entry("cifar100/Linf/X") == ZooEntry("cifar100", "Linf", "X")


def test_a_name_of_too_many_parts_is_a_one_line_error():
    with pytest.raises(ConfigError, match=r"robustbench:\[DATASET/\]\[THREAT/\]NAME"):
        entry("a/b/c/d")


def test_linf_is_linf_at_8_255_and_l2_is_l2_at_0_5_on_cifar10():
    assert entry("Linf/X").threat_model() == ThreatModel("linf", 8 / 255, 0.007)
    assert entry("L2/X").threat_model() == ThreatModel("l2", 0.5, 0.1)


def test_a_corruptions_entry_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="norm-ball threat models only") as error:
        entry("cifar10/corruptions/Hendrycks2020AugMix_WRN").threat_model()
    assert "\n" not in str(error.value)


def test_the_dataset_is_the_zoo_s_unless_given_and_another_benchmark_is_refused():
    zoo = entry("L2/X")
    assert zoo.dataset_option(None) == "cifar10"
    assert zoo.dataset_option("arrays") == "arrays"  # the user's own copy of CIFAR-10
    with pytest.raises(ConfigError, match="trained on cifar10, not dataset=svhn"):
        zoo.dataset_option("svhn")


def test_without_dataset_the_command_line_takes_the_zoo_s():
    chosen, rest = _chosen(["evaluation=quick", "evaluation.epsilon=0.1"], entry("X"))
    assert chosen["dataset"] == "cifar10"
    assert rest == ["evaluation.epsilon=0.1"]


def test_the_threat_model_sets_every_attack_s_norm_and_the_command_line_wins():
    evaluation = composed("paper", [], None)["evaluation"]
    lines = threat_overrides(evaluation, ThreatModel("l2", 0.5, 0.1))
    assert lines[:2] == ["evaluation.epsilon=0.5", "evaluation.step_size=0.1"]
    assert "evaluation.metrics.pgd.attack.norm=l2" in lines
    assert "evaluation.metrics.autoattack.attack.norm=l2" in lines
    assert "evaluation.metrics.flatness_worst_robust.weight_attack.norm=l2" in lines
    given = ["evaluation.metrics.pgd.attack.norm=linf", "evaluation.epsilon=0.25"]
    config = composed("paper", [*lines, *given], None)["evaluation"]
    assert config["epsilon"] == 0.25 and config["metrics"]["train_pgd"]["attack"]["epsilon"] == 0.25
    assert config["metrics"]["pgd"]["attack"]["norm"] == "linf"
    assert config["metrics"]["train_pgd"]["attack"]["norm"] == "l2"


def test_a_data_parallel_module_prefix_is_removed_and_other_keys_kept():
    weight = torch.ones(1)
    assert fitted({"module.a": weight, "module.b.c": weight}) == {"a": weight, "b.c": weight}
    assert fitted({"module.a": weight, "b": weight}) == {"module.a": weight, "b": weight}


def no_spec(name, package=None):
    return None


def test_without_robustbench_the_message_says_to_install_the_extra(monkeypatch):
    monkeypatch.delitem(sys.modules, "robustbench", raising=False)
    monkeypatch.setattr(robustbench_zoo.importlib.util, "find_spec", no_spec)
    with pytest.raises(ConfigError, match=r"pip install advflat\[robustbench\]") as error:
        model_source("robustbench:Standard").build(10)
    assert "\n" not in str(error.value)


@pytest.fixture(scope="module")
def zoo_files(tmp_path_factory):
    """Random weights of the smallest zoo architecture, saved as RobustBench checkpoints hold
    them (``state_dict`` with a ``module.`` prefix), and a tiny CIFAR-shaped dataset."""
    folder = tmp_path_factory.mktemp("zoo")
    torch.manual_seed(0)
    model = model_source(f"robustbench:{SMALLEST}").build(10)
    state = {f"module.{key}": value for key, value in model.state_dict().items()}
    torch.save({"state_dict": state}, folder / "weights.pt")
    (folder / "models" / "cifar10" / "L2").mkdir(parents=True)
    torch.save({"state_dict": state}, folder / "models" / "cifar10" / "L2" / "Ding2020MMA.pt")
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(8) % 10
    np.savez(folder / "data.npz", x_train=images[:4], y_train=labels[:4], x_test=images[4:],
             y_test=labels[4:])  # fmt: skip
    return folder


def data(folder):
    return ["dataset=arrays", f"dataset.path={folder / 'data.npz'}", "dataset.num_classes=10"]


@pytest.mark.slow
@needs_robustbench
def test_a_zoo_checkpoint_file_is_evaluated_at_the_zoo_s_l2_threat_model(zoo_files):
    out = zoo_files / "file_run"
    main(["--model", f"robustbench:{SMALLEST}", str(zoo_files / "weights.pt"), *data(zoo_files),
          *TINY, "--out", str(out)])  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["threat_model/pgd/attack/norm/l2"] == 1.0
    assert metrics["threat_model/pgd/attack/epsilon"] == 0.5
    assert metrics["threat_model/pgd/attack/step_size"] == 0.1


@pytest.mark.slow
@needs_robustbench
def test_a_robustbench_folder_is_read_by_its_loader_with_the_file_s_numbers(zoo_files):
    source = model_source(f"robustbench:{SMALLEST}")
    overrides = [*data(zoo_files), *TINY]
    from_file = evaluate_weights(
        source, zoo_files / "weights.pt", overrides, zoo_files / "a", False
    )
    loader = evaluate_weights(source, zoo_files / "models", overrides, zoo_files / "b", False)
    stored = json.loads((zoo_files / "b" / "config.json").read_text())
    assert stored["model"]["weights"].endswith("cifar10/L2/Ding2020MMA.pt")
    costs = ("cost/",)
    assert {k: v for k, v in loader.items() if not k.startswith(costs)} == {
        k: v for k, v in from_file.items() if not k.startswith(costs)
    }
