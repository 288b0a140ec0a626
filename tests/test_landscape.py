"""Loss landscapes (docs/flatness.md#loss-landscapes): normalized directions, the curve through the
trained weights,
files written, parameters restored."""

from __future__ import annotations

import json

import pytest
import torch

from advflat.attacks.pgd import PGD
from advflat.data.base import select
from advflat.evaluation.landscape import (
    LossContour,
    LossLandscape,
    grid,
    normalize_direction,
)
from advflat.weights import AdversarialWeightAttack, RandomWeightAttack, set_loss
from advflat.weights.layers import select_layers
from tests.conftest import TinyNet
from tests.forwards import ForwardsByWeights


def landscape(**options) -> LossLandscape:
    """A random-direction curve (ξ immaterial: directions are normalized to ``scale``)."""
    given = {
        "direction": "random",
        "weight_attack": RandomWeightAttack(xi=0.5),
        "steps": 51,
        "scale": 0.5,
        "first": 30,
    }
    return LossLandscape(**{**given, **options})


def contour(**options) -> LossContour:
    return LossContour(**{"steps": 3, "scale": 0.5, "first": 20, **options})


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_grid_has_51_points_in_minus_one_to_one_with_an_exact_zero():
    t = grid(51)
    assert len(t) == 51 and t[0] == -1.0 and t[-1] == 1.0 and t[25] == 0.0


def test_directions_are_normalized_to_a_share_of_each_layers_largest_weight():
    model = TinyNet()
    layers = select_layers(model, include_biases=True)
    direction = normalize_direction([torch.randn_like(p) * 9 for p in layers], layers, 0.5)
    for d, p in zip(direction, layers, strict=True):
        torch.testing.assert_close(d.abs().max(), 0.5 * p.detach().abs().max())


def test_random_curve_passes_through_the_unperturbed_loss_and_writes_files(tiny_data, tmp_path):
    model = TinyNet().eval()
    before = state(model)
    metric = landscape(output_dir=str(tmp_path))
    metrics = metric(model, tiny_data, {})
    saved = json.loads((tmp_path / "landscape_random_clean.json").read_text())
    assert len(saved["t"]) == len(saved["loss"]) == 51
    clean = set_loss(model, list(select(tiny_data, "test", 30).batches(500))).item()
    assert saved["loss"][25] == clean == saved["reference"]
    assert (tmp_path / "landscape_random_clean.png").stat().st_size > 1000
    assert metrics["landscape/random/clean/max_increase"] == pytest.approx(
        max(saved["loss"]) - clean
    )
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_adversarial_direction_climbs_in_the_positive_direction(tiny_data):
    model = TinyNet().eval()
    metric = LossLandscape(
        direction="adversarial",
        steps=5,
        scale=0.05,
        weight_attack=AdversarialWeightAttack(xi=0.05, steps=3, lr=0.05, init="zero"),
        first=30,
    )
    curve = metric.curve(model, list(select(tiny_data, "test", 30).batches(500)))
    assert curve["loss"][-1] > curve["loss"][2] == curve["reference"]
    assert metric.scale == 0.05


def test_robust_curve_reruns_the_attack_at_every_point(tiny_data):
    attack = PGD(epsilon=0.1, step_size=0.05, steps=2, restarts=1)
    metric = landscape(loss="robust", attack=attack, steps=3, first=20)
    model = TinyNet().eval()
    examples = select(tiny_data, "test", 20)
    batches = list(examples.batches(500))
    once = ForwardsByWeights(model)
    attack(model, examples.x, examples.y)
    once.stop()
    recorder = ForwardsByWeights(model)
    curve = metric.curve(model, batches)
    # t = −1, 0, 1, then the reference at w: at each, the whole attack and the loss at its
    # adversarial examples (t = 0 and the reference are at the trained weights).
    runs = recorder.runs
    assert [len(run.inputs) for run in runs] == [once.count() + 1] * 4
    assert [recorder.at_trained_weights(run) for run in runs] == [False, True, False, True]
    assert all(not torch.equal(x, examples.x) for run in runs for x in run.inputs)
    recorder.stop()
    clean = landscape(steps=3, first=20).curve(model, batches)
    assert all(r > c for r, c in zip(curve["loss"], clean["loss"], strict=True))


def test_contour_is_a_grid_through_the_trained_weights(tiny_data, tmp_path):
    model = TinyNet().eval()
    before = state(model)
    metrics = contour(output_dir=str(tmp_path))(model, tiny_data, {})
    saved = json.loads((tmp_path / "landscape_contour_clean.json").read_text())
    assert len(saved["loss"]) == 3 and all(len(row) == 3 for row in saved["loss"])
    assert saved["loss"][1][1] == saved["reference"]
    assert (tmp_path / "landscape_contour_clean.png").stat().st_size > 1000
    assert set(metrics) == {"landscape/contour/clean/max_increase"}
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_without_an_output_dir_nothing_is_written(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    landscape(steps=3, first=10)(TinyNet().eval(), tiny_data, {})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: landscape(direction="sideways"), "direction must be one of"),
        (lambda: landscape(steps=1), "steps must be >= 2"),
        (lambda: landscape(scale=0.0), "scale must be > 0"),
        (lambda: landscape(loss="robust"), "attack is required"),
        (lambda: contour(steps=0), "steps must be >= 2"),
        (lambda: contour(scale=0.0), "scale must be > 0"),
    ],
)
def test_bad_values_are_rejected(factory, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        factory()
