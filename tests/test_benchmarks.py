"""The benchmark machinery of `make bench`: FLOP counts, the report's fields and its table.

Speed itself is never asserted here (that is what `make bench` measures)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advflat.benchmarks.autoattack import bench_autoattack
from advflat.benchmarks.flops import device_peak, forward_flops, useful_flops_per_example
from advflat.benchmarks.table import markdown
from advflat.benchmarks.training_speed import adversarial_epoch_speed
from tests.conftest import TinyNet

CPU = torch.device("cpu")


def test_forward_flops_of_a_linear_layer_are_two_per_multiply_add():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    assert forward_flops(model, (1, 4, 4), CPU) == 2 * 16 * 3


def test_forward_flops_of_a_convolution_match_the_closed_form():
    # 3→5 channels, 3×3 kernel, 'same' padding on 6×6: 5·6·6 outputs of 3·3·3 multiply-adds.
    model = nn.Conv2d(3, 5, 3, padding=1, bias=False)
    assert forward_flops(model, (3, 6, 6), CPU) == 2 * (5 * 6 * 6) * (3 * 3 * 3)


@pytest.mark.parametrize(("steps", "factor"), [(0, 3), (7, 17), (10, 23)])
def test_a_pgd_k_step_costs_2k_plus_3_forwards(steps, factor):
    assert useful_flops_per_example(5.0, steps) == factor * 5.0


def test_training_speed_reports_every_field(tiny_data):
    row = adversarial_epoch_speed(
        "tiny", TinyNet(), tiny_data, CPU, peak_flops=1e9, epsilon=0.1, step=0.03, steps=2,
        batch_size=32,
    )  # fmt: skip
    assert row["name"] == "tiny" and row["images"] == 96 and row["steps"] == 2
    assert row["forward_gflops_per_image"] == pytest.approx((2 * 16 * 16 + 2 * 16 * 3) / 1e9)
    for key in ["advflat_images_per_s", "reference_images_per_s", "speedup", "peak_memory_mb"]:
        assert row[key] > 0, key
    useful = 7 * row["forward_gflops_per_image"] * 1e9 * 96 / row["advflat_seconds"]  # FLOP/s
    assert row["useful_tflops_per_s"] == pytest.approx(useful / 1e12)
    assert row["useful_flop_utilisation"] == pytest.approx(useful / 1e9)
    assert row["attack_step_over_training_step"] >= 0


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
    row = adversarial_epoch_speed("tiny", TinyNet(), tiny_data, CPU, peak_flops=None, steps=1)
    assert row["useful_flop_utilisation"] is None and row["useful_tflops_per_s"] > 0


def test_markdown_table_shows_every_benchmarked_model():
    row = {
        "name": "wrn28_10", "images": 16, "steps": 10, "advflat_images_per_s": 2.0,
        "reference_images_per_s": 1.0, "speedup": 2.0, "useful_tflops_per_s": 0.125,
        "useful_flop_utilisation": 0.25,
        "attack_step_over_training_step": 0.7, "peak_memory_mb": 100.0,
    }  # fmt: skip
    report = {
        "device": "H100", "torch": "2.x", "peak_flops": 989e12,
        "results": [row],
        "autoattack": {"model": "resnet18", "images": 16.0, "budget": 0.02,
                       "autoattack/robust_error": 1.0, "autoattack/seconds_per_1000": 12.5},
        "flatness_seconds": {"model": "resnet18", "images": 64, "attempts": 1,
                             "flatness/average/clean": 0.5},
    }  # fmt: skip
    text = markdown(report)
    assert "| wrn28_10 (16 images, PGD-10) | 2 | 1 | 2.00× | 0.125 | 25.0% | 0.70 | 100 |" in text
    assert "bf16 peak 989 TFLOP/s" in text
    assert "| `autoattack/seconds_per_1000` | 12.50 |" in text
    assert "| `flatness/average/clean` | 0.50 |" in text
    assert report["autoattack"]["model"] == "resnet18"  # the report itself is left intact
