"""Every file advflat reads back is checked before it is used: a damaged or crafted file ends in
one line naming the file and the key, and nothing is written or reported from it.

Each case builds its file here, from a valid one, changing one thing.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from advflat.attacks.apgd import APGD
from advflat.attacks.autoattack import AutoAttack
from advflat.core.errors import ConfigError
from advflat.core.schema import MAX_DEPTH
from advflat.models import MLP
from tests.conftest import blobs
from tests.setups import MLP_CONFIG
from tests.test_checkpoint_and_resume import KilledAfter, PreemptedError, fit
from tests.test_safe_loading import hostile_run_configs


def contents(folder: Path) -> dict[Path, bytes]:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def deep(levels: int) -> dict:
    node: dict = {}
    for _ in range(levels):
        node = {"a": node}
    return node


def deep_json(levels: int) -> str:
    return '{"a": ' * levels + "{}" + "}" * levels


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# ---- advflat-report: a bad file is one note; only a bad metrics.json leaves its run out ------
GOOD_METRICS = {"test/clean_error": 0.2, "test/robust_loss/pgd": 1.0}


def write_run(root: Path, name: str, files: dict[str, str]) -> Path:
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "epoch_001.pt").write_bytes(b"")
    for file, text in {"metrics.json": json.dumps(GOOD_METRICS), **files}.items():
        (run / file).parent.mkdir(parents=True, exist_ok=True)
        (run / file).write_text(text)
    return run


SNAPSHOT = "checkpoints/epoch_001.eval-00000000.json"
# (file, content, the key the note names); the run stays in the report
RUN_KEPT = {
    "history_not_json": ("history.json", "{", "the file is not valid JSON"),
    "history_list": ("history.json", "[1, 2]", "the file must be a mapping, got a list"),
    "history_epoch": ("history.json", '{"one": {}}', "one is not an epoch"),
    "history_value": ("history.json", '{"1": {"train/loss": "low"}}', "1.train/loss must be a"),
    "config_list": ("config.json", "[]", "the file must be a mapping"),
    "config_deep": ("config.json", deep_json(5000), "nests deeper than"),
    "config_epsilon": (
        "config.json",
        '{"evaluation": {"epsilon": "8/255"}}',
        "evaluation.epsilon must be a number",
    ),  # fmt: skip
    "config_trainer": ("config.json", '{"trainer": [1]}', "trainer must be a mapping"),
    "config_xi": (
        "config.json",
        '{"evaluation": {"metrics": {"f": {"weight_attack": {"xi": -1}}}}}',
        "evaluation.metrics.f.weight_attack.xi must lie in",
    ),  # fmt: skip
    "snapshot_not_json": (SNAPSHOT, "{]", "the file is not valid JSON"),
    "snapshot_list": (SNAPSHOT, "[0.5]", "the file must be a mapping"),
    "snapshot_value": (SNAPSHOT, '{"test/robust_loss/pgd": [1]}', "test/robust_loss/pgd must be"),
    "overrides_yaml": (".hydra/overrides.yaml", "[unclosed", "is not valid YAML"),
    "overrides_mapping": (".hydra/overrides.yaml", "a: 1", "must be a list of key=value lines"),
}
RUN_LEFT_OUT = {
    "metrics_not_json": ("metrics.json", "{", "the file is not valid JSON"),
    "metrics_list": ("metrics.json", "[]", "the file must be a mapping, got a list"),
    "metrics_string": ("metrics.json", '{"test/clean_error": "0.2"}', "test/clean_error must be"),
    "metrics_deep": ("metrics.json", deep_json(MAX_DEPTH + 1), "nests deeper than"),
    "metrics_binary": ("metrics.json", "\udcff", "the file is not valid JSON"),
}


def report_notes(root: Path, caplog: pytest.LogCaptureFixture) -> list[str]:
    from advflat.cli.report import main

    caplog.set_level(logging.INFO)
    main([str(root)])
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("case", sorted(RUN_KEPT))
def test_a_bad_file_of_a_run_is_one_note_and_the_run_stays_in_the_report(tmp_path, caplog, case):
    from advflat.report.collect import gather

    file, text, key = RUN_KEPT[case]
    bad = write_run(tmp_path, "bad", {file: text})
    (bad / SNAPSHOT).parent.mkdir(exist_ok=True)
    write_run(tmp_path, "good", {})
    runs, notes = gather(tmp_path)
    assert [run.path.name for run in runs] == ["bad", "good"]
    assert len(notes) == 1 and "\n" not in notes[0]
    assert f"left out {bad / file}: " in notes[0] and key in notes[0], notes[0]
    assert runs[0].metrics["test/clean_error"] == 0.2  # the rest of the run is read
    assert any(key in note for note in report_notes(tmp_path, caplog))
    assert f"left out {bad / file}" in (tmp_path / "report" / "table.md").read_text()


@pytest.mark.parametrize("case", sorted(RUN_LEFT_OUT))
def test_a_run_whose_metrics_json_is_bad_is_left_out_with_one_note(tmp_path, caplog, case):
    from advflat.report.collect import gather

    file, text, key = RUN_LEFT_OUT[case]
    bad = write_run(tmp_path, "bad", {})
    (bad / file).write_bytes(text.encode("utf-8", "surrogateescape"))
    write_run(tmp_path, "good", {})
    runs, notes = gather(tmp_path)
    assert [run.path.name for run in runs] == ["good"]
    assert notes == [notes[0]] and notes[0].startswith(f"left out the run {bad}: {bad / file}: ")
    assert key in notes[0]
    table = (report_notes(tmp_path, caplog), (tmp_path / "report" / "table.md").read_text())[1]
    assert f"left out the run {bad}" in table


def test_a_report_of_only_bad_runs_exits_with_one_line_naming_each(tmp_path, caplog):
    from advflat.cli.report import main

    write_run(tmp_path, "a", {"metrics.json": "[]"})
    write_run(tmp_path, "b", {"metrics.json": "{"})
    with pytest.raises(SystemExit) as exited:
        main([str(tmp_path)])
    assert exited.value.code == 2
    [line] = errors(caplog)
    assert "no runs" in line and str(tmp_path / "a" / "metrics.json") in line
    assert str(tmp_path / "b" / "metrics.json") in line
    assert not (tmp_path / "report").exists()


# ---- advflat-eval: a bad checkpoint, config.json or result file is one line, exit 2 ---------
DIGITS_MLP = {**MLP_CONFIG, "num_classes": 10, "input_shape": [1, 8, 8]}


def eval_run(tmp_path: Path, model_config: dict | None = None, **state) -> Path:
    """A finished run on the digits whose final.pt a plain ``advflat-eval RUN`` would evaluate
    (with ``state`` replacing entries of the checkpoint)."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    weights = MLP(num_classes=10, input_shape=[1, 8, 8], hidden=[16]).state_dict()
    saved = {"format": 1, "epoch": 1, "model": weights, "model_config": DIGITS_MLP,
             "config": hostile_run_configs(tmp_path / "unused")["dataset_copyfile"]}  # fmt: skip
    saved["config"]["dataset"] = {"_target_": "advflat.data.Digits", "train_first": 20,
                                  "test_first": 10}  # fmt: skip
    saved["config"]["evaluation"]["metrics"]["clean"]["first"] = 10
    if model_config is not None:
        saved["model_config"] = model_config
    torch.save({**saved, **state}, run / "checkpoints" / "final.pt")
    return run


EVAL_CASES = {
    # a model config whose model would not fit in memory: refused before anything is built
    "hidden_huge": (
        {"model_config": {**DIGITS_MLP, "hidden": [10**12]}},
        "model_config.hidden[0] must lie in",
    ),  # fmt: skip
    "hidden_long": (
        {"model_config": {**DIGITS_MLP, "hidden": [16] * 1000}},
        "model_config.hidden has 1000 entries",
    ),  # fmt: skip
    "bigger_than_its_weights": (
        {"model_config": {**DIGITS_MLP, "hidden": [40000]}},
        "its weights do not match its model config",
    ),  # fmt: skip
    "epoch_string": ({"epoch": "1"}, "epoch must be an integer"),
    "epoch_negative": ({"epoch": -3}, "epoch must lie in"),
    "weights_list": ({"model": [1, 2]}, "model must be a mapping"),
    "weight_not_tensor": ({"model": {"w": 1.0}}, "model.w must be a tensor"),
    "deep_config": ({"config": deep(2 * MAX_DEPTH)}, "nests deeper than"),
}


@pytest.mark.parametrize("case", sorted(EVAL_CASES))
def test_advflat_eval_refuses_a_bad_checkpoint_with_one_line(tmp_path, caplog, case):
    from advflat.cli.evaluate import main

    change, key = EVAL_CASES[case]
    config = change.pop("model_config", None)
    run = eval_run(tmp_path, config, **change)
    before = contents(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main([str(run)])
    assert exited.value.code == 2
    [line] = errors(caplog)
    assert "final.pt" in line and key in line and "\n" not in line, line
    assert contents(tmp_path) == before


def test_a_bad_earlier_result_is_one_line_naming_it(tmp_path):
    from advflat.evaluation.checkpoints import read_result

    path = tmp_path / "epoch_001.eval-1a2b3c4d.json"
    for text, key in [("{", "the file is not valid JSON"), ('{"a": {}}', "a must be a number")]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=f"^{path}: {key}"):
            read_result(path)


# ---- resuming training: last.pt is checked against the run before anything is loaded --------
def tamper_optimizer_shape(state: dict) -> None:
    state["optimizer"]["state"][0]["momentum_buffer"] = torch.zeros(2, 2)


def drop(part: str, key: str | None = None):
    def change(state: dict) -> None:
        del (state if key is None else state[part])[key or part]

    return change


def put(part: str, value: object, key: str | None = None):
    def change(state: dict) -> None:
        (state if key is None else state[part])[key or part] = value

    return change


RESUME_CASES = {
    "no_optimizer": (drop("optimizer"), "optimizer is missing"),
    "no_lr_lambdas": (drop("scheduler", "lr_lambdas"), "scheduler lacks ['lr_lambdas']"),
    "scheduler_extra": (put("scheduler", 1, "optimizer"), "scheduler has unexpected keys"),
    "rng_list": (put("rng", [1, 2], "torch"), "rng.torch must be a tensor"),
    "rng_short": (put("rng", torch.zeros(3, dtype=torch.uint8), "torch"), "rng.torch must have"),
    "data_rng": (drop("rng", "data"), "rng.data is missing"),
    "optimizer_shape": (tamper_optimizer_shape, "optimizer.state[0].momentum_buffer must have"),
    "optimizer_index": (put("optimizer", {7: {}}, "state"), "optimizer.state[7] names no"),
    "optimizer_groups": (put("optimizer", [], "param_groups"), "optimizer.param_groups must"),
    "learning_rate": (
        lambda s: s["optimizer"]["param_groups"][0].update(lr=-1.0),
        "optimizer.param_groups[0].lr must lie in",
    ),  # fmt: skip
    "epoch_zero": (put("epoch", 0), "epoch must lie in [1, 4], got 0"),
    "epoch_huge": (put("epoch", 10**6), "epoch must lie in [1, 4], got 1000000"),
    "epoch_float": (put("epoch", 2.5), "epoch must be an integer"),
    "ema_shape": (
        lambda s: s["ema"].update({"module.classifier.bias": torch.zeros(7)}),
        "ema.module.classifier.bias must have shape [3]",
    ),  # fmt: skip
    "method_extra": (put("method", {"loss": {}, "payload": 1}), "method.payload is not part"),
    "collapsed_string": (lambda s: s["method"].update(collapsed="no"), "method.collapsed must"),
    "model_shape": (
        lambda s: s["model"].update({"classifier.bias": torch.zeros(5)}),
        "its weights do not match its model config",
    ),  # fmt: skip
    "rng_ranks": (put("rng_ranks", "all"), "rng_ranks must be a list"),
}


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run killed after epoch 2 of 4: its last.pt, valid, to tamper with."""
    generator = torch.Generator().manual_seed(0)
    from advflat.data.base import ImageData

    data = ImageData(blobs(96, generator), blobs(48, generator), num_classes=3)
    folder = tmp_path_factory.mktemp("interrupted")
    with pytest.raises(PreemptedError):
        fit(folder, data, KilledAfter)
    return folder


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_resume_refuses_a_tampered_last_checkpoint_before_training(
    tmp_path, tiny_data, interrupted, case
):
    change, key = RESUME_CASES[case]
    (tmp_path / "checkpoints").mkdir()
    state = torch.load(interrupted / "checkpoints" / "last.pt", weights_only=True)
    change(state)
    torch.save(state, tmp_path / "checkpoints" / "last.pt")
    before = contents(tmp_path)
    with pytest.raises(ConfigError) as raised:
        fit(tmp_path, tiny_data)
    message = str(raised.value)
    assert "last.pt" in message and key in message and "\n" not in message, message
    assert contents(tmp_path) == before  # no final.pt, no snapshot, nothing rewritten


# ---- AutoAttack: a state with a matching fingerprint still has to fit the evaluation -------
class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.linspace(-1, 1, 48).view(3, 16))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def attack(state_file: Path) -> AutoAttack:
    component = APGD(epsilon=0.1, norm="linf", restarts=1, steps=3)
    return AutoAttack(
        epsilon=0.1, version="custom", attacks=[component], state_file=str(state_file)
    )


def all_broken(state: dict) -> None:  # claims 100 % robust error without adversarial examples
    state["robust"][:] = False
    state["robust_counts"]["apgd-ce"] = 0


def edit_counts(name: str, value: int):
    def change(state: dict) -> None:
        state["robust_counts"][name] = value

    return change


def in_progress(pending: torch.Tensor):
    def change(state: dict) -> None:
        state.update(finished=[], component="apgd-ce", pending=pending)
        del state["robust_counts"]["apgd-ce"]

    return change


def outside(state: dict) -> None:
    state["x_adv"][0] += 0.5


AUTOATTACK_CASES = {
    "count_above_n": (edit_counts("apgd-ce", 50), "robust_counts.apgd-ce must lie in"),
    "count_negative": (edit_counts("apgd-ce", -1), "robust_counts.apgd-ce must lie in"),
    "count_not_the_mask": (edit_counts("apgd-ce", 0), "robust_counts.apgd-ce must be"),
    "count_key": (lambda s: s["robust_counts"].update(extra=1), "robust_counts must have"),
    "clean_count": (edit_counts("clean", 0), "robust_counts.apgd-ce must lie in"),
    "all_broken": (all_broken, "x_adv does not break every example counted broken"),
    "robust_shape": (lambda s: s.update(robust=s["robust"][:5]), "robust must have shape [30]"),
    "x_adv_shape": (lambda s: s.update(x_adv=s["x_adv"][:, :, :2]), "x_adv must have shape"),
    "x_adv_outside": (outside, "x_adv leaves the threat model"),
    "finished_other": (lambda s: s.update(finished=["square"]), "finished must be the first"),
    "pending_range": (in_progress(torch.tensor([0, 10**6])), "pending must be increasing"),
    "pending_float": (in_progress(torch.tensor([0.5])), "pending must be a 1-D int64"),
    "component_other": (lambda s: s.update(component="fab-t"), "component must be"),
}


@pytest.fixture(scope="module")
def finished_state(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module, tuple]:
    generator = torch.Generator().manual_seed(0)
    examples = blobs(30, generator)
    model = Linear().eval()
    path = tmp_path_factory.mktemp("autoattack") / "state.pt"
    attack(path).run(model, examples.x, examples.y)
    return path, model, (examples.x, examples.y)


@pytest.mark.parametrize("case", sorted(AUTOATTACK_CASES))
def test_a_tampered_autoattack_state_with_a_matching_fingerprint_is_refused(
    tmp_path, finished_state, case
):
    path, model, (x, y) = finished_state
    change, key = AUTOATTACK_CASES[case]
    state = torch.load(path, weights_only=True)
    change(state)
    tampered = tmp_path / "state.pt"
    torch.save(state, tampered)
    before = contents(tmp_path)
    with pytest.raises(ConfigError) as raised:
        attack(tampered).run(model, x, y)
    message = str(raised.value)
    assert str(tampered) in message and key in message and "\n" not in message, message
    assert contents(tmp_path) == before


def test_an_intact_autoattack_state_still_resumes(tmp_path, finished_state):
    path, model, (x, y) = finished_state
    resumed = attack(path).run(model, x, y)
    assert resumed.robust_counts == torch.load(path, weights_only=True)["robust_counts"]


def test_the_untampered_run_of_the_eval_cases_evaluates(tmp_path):
    from advflat.cli.evaluate import main

    run = eval_run(tmp_path)
    main([str(run)])
    assert len(list((run / "checkpoints").glob("final.eval-*.json"))) == 1


# ---- the checks themselves, on hand-made values ---------------------------------------------
def test_within_depth_counts_mappings_and_lists_as_levels():
    from advflat.core.schema import within_depth

    within_depth({"a": [{"b": 1}]}, "f", limit=3)  # mapping, list, mapping: 3 levels
    with pytest.raises(ConfigError, match="^f: the file nests deeper than 2 levels$"):
        within_depth({"a": [{"b": 1}]}, "f", limit=2)


def test_number_refuses_bools_strings_and_values_out_of_range():
    from advflat.core.schema import number

    assert number(3, "f", "k", 0, 3, integer=True) == 3
    cases = [
        (True, "must be a number, got a bool"),
        ("1", "must be a number, got a string"),
        (4, "must lie in [0, 3], got 4"),
        (float("nan"), "must lie in [0, 3], got nan"),
    ]
    for value, problem in cases:
        with pytest.raises(ConfigError, match=f"^f: k {re.escape(problem)}$"):
            number(value, "f", "k", 0, 3)
    with pytest.raises(ConfigError, match="^f: k must be an integer, got a float"):
        number(2.0, "f", "k", integer=True)


def test_like_compares_keys_lengths_shapes_and_kinds_with_a_reference():
    from advflat.core.schema import like

    reference = {"w": torch.zeros(2, 3), "steps": [1, 2], "rate": 0.5, "on": True, "f": None}
    like({"w": torch.ones(2, 3), "steps": [3, 4], "rate": 1, "on": False, "f": "x"}, reference,
         "f", "s")  # fmt: skip
    bad = {
        "s.w must have shape [2, 3], got [3, 2]": {"w": torch.zeros(3, 2)},
        "s.w must be a torch.float32 tensor, got torch.float64": {
            "w": torch.zeros(2, 3, dtype=torch.float64)
        },
        "s.steps must be a list of 2 entries": {"steps": [1]},
        "s.steps[1] must be an integer, got a float": {"steps": [1, 2.5]},
        "s.on must be true or false, got an integer": {"on": 1},
        "s.f must be a plain value, got a mapping": {"f": {}},
    }
    for problem, change in bad.items():
        with pytest.raises(ConfigError, match=f"^f: {re.escape(problem)}"):
            like({**reference, **change}, reference, "f", "s")
    with pytest.raises(ConfigError, match=r"^f: s lacks \['rate'\]"):
        like({k: v for k, v in reference.items() if k != "rate"}, reference, "f", "s")


def test_resume_refuses_a_history_json_with_a_key_that_is_not_an_epoch(
    tmp_path, tiny_data, interrupted
):
    (tmp_path / "checkpoints").mkdir()
    last = (interrupted / "checkpoints" / "last.pt").read_bytes()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(last)
    (tmp_path / "history.json").write_text('{"1": {}, "two": {}}')
    before = contents(tmp_path)
    with pytest.raises(ConfigError, match=r"history.json: two is not an epoch \(a whole number\)$"):
        fit(tmp_path, tiny_data)
    assert contents(tmp_path) == before
