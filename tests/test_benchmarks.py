"""The benchmark machinery of `make bench`: FLOP counts, the report's fields and its table.

Speed itself is never asserted here (that is what `make bench` measures)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from advflat.core.cpu_features import OVERRIDE, cpu_features
from benchmarks.autoattack import bench_autoattack
from benchmarks.flops import device_peak, forward_flops, useful_flops_per_example
from benchmarks.run import main as bench_main
from benchmarks.run import timed_precisions
from benchmarks.table import markdown
from benchmarks.training_speed import adversarial_epoch_speed
from tests.conftest import TinyNet

CPU = torch.device("cpu")


def test_forward_flops_of_a_linear_layer_are_two_per_multiply_add():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    assert forward_flops(model, (1, 4, 4), CPU) == 2 * 16 * 3


def test_forward_flops_of_a_convolution_match_the_closed_form():
    # 3→5 channels, 3×3 kernel, 'same' padding on 6×6: 5·6·6 outputs of 3·3·3 multiply-adds.
    model = nn.Conv2d(3, 5, 3, padding=1, bias=False)
    assert forward_flops(model, (3, 6, 6), CPU) == 2 * (5 * 6 * 6) * (3 * 3 * 3)


def test_forward_flops_of_a_conv_net_are_the_hand_counted_multiply_adds():
    # Conv 1→2 channels, 3×3 kernel, no padding, on 5×5: 2·3·3 outputs of 1·3·3 multiply-adds
    # = 162; ReLU (no FLOPs); Linear 18 → 4: 72 multiply-adds. 2 FLOPs each: 468. Biases,
    # ReLU and flatten are not matrix work and are not counted.
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(18, 4))
    assert forward_flops(model, (1, 5, 5), CPU) == 468


@pytest.mark.parametrize(("steps", "factor"), [(0, 3), (7, 17), (10, 23)])
def test_a_pgd_k_step_costs_2k_plus_3_forwards(steps, factor):
    assert useful_flops_per_example(5.0, steps) == factor * 5.0


def test_training_speed_reports_every_field_for_each_precision(tiny_data):
    rows = adversarial_epoch_speed(
        "tiny", TinyNet(), tiny_data, CPU, peak_flops=1e9, precisions=("fp32", "bf16"),
        epsilon=0.1, step=0.03, steps=2, batch_size=32,
    )  # fmt: skip
    assert [row["precision"] for row in rows] == ["fp32", "bf16"]
    # The test suite treats this CPU as lacking bf16 units (tests/conftest.py): emulated.
    assert [row["bf16_emulated"] for row in rows] == [False, True]
    forward = 2 * 16 * 16 + 2 * 16 * 3  # TinyNet's two linear layers, 2 FLOPs per multiply-add
    for row in rows:
        assert row["name"] == "tiny" and row["images"] == 96 and row["steps"] == 2
        assert row["forward_gflops_per_image"] == pytest.approx(forward / 1e9)
        for key in ["advflat_images_per_s", "reference_images_per_s", "speedup", "peak_memory_mb"]:
            assert row[key] > 0, key
        assert row["advflat_images_per_s"] == pytest.approx(96 / row["advflat_seconds"])
        useful = (2 * 2 + 3) * forward * 96 / row["advflat_seconds"]  # PGD-2: 7 forwards' worth
        assert row["useful_tflops_per_s"] == pytest.approx(useful / 1e12)
        assert row["useful_flop_utilisation"] == pytest.approx(useful / 1e9)
        assert row["attack_step_over_training_step"] >= 0
    # One reference loop (fp32) for both rows: the same reference speed.
    assert rows[0]["reference_images_per_s"] == rows[1]["reference_images_per_s"]


def test_bf16_rows_are_native_where_the_cpu_has_bf16_units(tiny_data, monkeypatch):
    monkeypatch.setenv(OVERRIDE, "1")
    (row,) = adversarial_epoch_speed(
        "tiny", TinyNet(), tiny_data, CPU, peak_flops=None, precisions=("bf16",), steps=1
    )
    assert row["precision"] == "bf16" and row["bf16_emulated"] is False


def test_bf16_is_timed_only_where_native_unless_emulated_rows_are_asked_for(monkeypatch):
    monkeypatch.setenv(OVERRIDE, "0")  # this CPU, as the suite treats it: no bf16 units
    assert timed_precisions(CPU, emulated_bf16=False) == ("fp32",)
    assert timed_precisions(CPU, emulated_bf16=True) == ("fp32", "bf16")
    monkeypatch.setenv(OVERRIDE, "1")
    assert timed_precisions(CPU, emulated_bf16=False) == ("fp32", "bf16")


def test_autoattack_bench_reports_seconds_per_1000_for_each_component():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10))
    model.input_shape = (3, 4, 4)
    result = bench_autoattack(model, 8, CPU, budget=0.02)
    components = [k for k in result if k.startswith("autoattack/full_budget_seconds_per_1000/")]
    assert len(components) == 4
    assert result["autoattack/full_budget_seconds_per_1000"] == pytest.approx(
        sum(result[k] for k in components)
    )
    assert 0 <= result["autoattack/robust_error"] <= 1


def test_cpus_have_no_data_sheet_peak_and_their_utilisation_is_left_blank(tiny_data):
    assert device_peak(CPU) is None
    (row,) = adversarial_epoch_speed("tiny", TinyNet(), tiny_data, CPU, peak_flops=None, steps=1)
    assert row["useful_flop_utilisation"] is None and row["useful_tflops_per_s"] > 0


def test_markdown_table_shows_every_benchmarked_model_and_precision_and_the_cpu():
    row = {
        "name": "wrn28_10", "precision": "fp32", "bf16_emulated": False, "images": 16,
        "steps": 10, "advflat_images_per_s": 2.0,
        "reference_images_per_s": 1.0, "speedup": 2.0, "useful_tflops_per_s": 0.125,
        "useful_flop_utilisation": 0.25,
        "attack_step_over_training_step": 0.7, "peak_memory_mb": 100.0,
    }  # fmt: skip
    bf16 = {**row, "precision": "bf16", "bf16_emulated": True, "advflat_images_per_s": 4.0}
    report = {
        "device": "H100", "torch": "2.x", "peak_flops": 989e12,
        "cpu": {"model": "Xeon 8480+", "amx_bf16": True, "avx512_bf16": False,
                "torch_capability": "AVX512"},
        "bf16_native": True,
        "results": [row, bf16],
        "autoattack": {"model": "resnet18", "images": 16.0, "budget": 0.02,
                       "autoattack/robust_error": 1.0, "autoattack/seconds_per_1000": 12.5},
        "flatness_seconds": {"model": "resnet18", "images": 64, "attempts": 1,
                             "flatness/average/clean": 0.5},
    }  # fmt: skip
    text = markdown(report)
    assert (
        "| wrn28_10 (16 images, PGD-10) | fp32 | 2 | 1 | 2.00× | 0.125 | 25.0% | 0.70 | 100 |"
        in text
    )
    assert "| wrn28_10 (16 images, PGD-10) | bf16 (emulated) | 4 | 1 |" in text
    assert (
        "CPU: Xeon 8480+ (amx_bf16 yes, avx512_bf16 no; torch capability AVX512); "
        "bf16 on the benchmarked device: native." in text
    )
    assert "bf16 peak 989 TFLOP/s" in text
    assert "| `autoattack/seconds_per_1000` | 12.50 |" in text
    assert "| `flatness/average/clean` | 0.50 |" in text
    assert report["autoattack"]["model"] == "resnet18"  # the report itself is left intact


def positive_and_finite(values: dict) -> list[str]:
    """The keys whose values are NOT positive finite floats."""
    return [
        k for k, v in values.items() if not (isinstance(v, float) and math.isfinite(v) and v > 0)
    ]


def test_bench_smoke_writes_a_complete_report_with_positive_finite_timings(tmp_path):
    threads = torch.get_num_threads()
    try:
        path = bench_main(["--smoke", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)  # --smoke runs on one thread
    report = json.loads(path.read_text())
    assert set(report) == {"device", "cpu", "bf16_native", "torch", "peak_flops", "results",
                           "autoattack", "flatness_seconds"}  # fmt: skip
    features = cpu_features()
    assert report["cpu"] == {
        "model": features.model,
        "amx_bf16": "amx_bf16" in features.bf16_flags,
        "avx512_bf16": "avx512_bf16" in features.bf16_flags,
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
    }
    assert report["bf16_native"] is False  # the suite treats every CPU as lacking bf16 units
    fp32, bf16 = report["results"]  # side by side: fp32 then bf16, same model and images
    assert (fp32["precision"], fp32["bf16_emulated"]) == ("fp32", False)
    assert (bf16["precision"], bf16["bf16_emulated"]) == ("bf16", True)
    for row in (fp32, bf16):
        assert (row["name"], row["images"], row["steps"]) == ("lenet_digits", 32, 7)
        assert row.pop("useful_flop_utilisation") is None  # a CPU has no data-sheet peak
        assert row.pop("attack_step_over_training_step") >= 0
        labels = ("name", "precision", "bf16_emulated", "images", "steps")
        timings = {k: v for k, v in row.items() if k not in labels}
        assert len(timings) == 7 and not positive_and_finite(timings), timings
    autoattack = report["autoattack"]
    assert autoattack.pop("model") == "lenet_digits"
    assert 0 <= autoattack.pop("autoattack/robust_error") <= 1
    assert len(autoattack) == 8 and not positive_and_finite(autoattack), autoattack
    flatness = report["flatness_seconds"]
    assert (flatness.pop("model"), flatness.pop("images"), flatness.pop("attempts")) == (
        "lenet_digits", 2, 1
    )  # fmt: skip
    assert len(flatness) == 6 and not positive_and_finite(flatness), flatness
    table = path.with_suffix(".md").read_text()
    assert "| lenet_digits (32 images, PGD-7) | fp32 |" in table
    assert "| lenet_digits (32 images, PGD-7) | bf16 (emulated) |" in table
    assert f"CPU: {features.model} (amx_bf16 " in table
    assert all(f"| `{key}` |" in table for key in [*autoattack, *flatness] if "/" in key)
