"""Attacks and measures refuse inputs they cannot honour: images off advflat's [0, 1] scale,
non-finite pixels, mismatched batches and labels that are not class indices of the model.

Without the check, PGD on [0, 255] images returned points clamped into [0, 1] (up to 254 away
from x at ε = 0.1) and NaN images gave NaN, silently.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from advflat.attacks import (
    APGD,
    FAB,
    FGSM,
    PGD,
    APGDTargeted,
    AutoAttack,
    FABTargeted,
    NoAttack,
    Square,
)
from advflat.attacks import inputs as input_checks
from advflat.evaluation.flatness import flatness, measure_flatness
from advflat.evaluation.hessian import adversarial_batches, hessian_spectrum
from advflat.evaluation.landscape import LossContour, LossLandscape
from advflat.weights import RandomWeightAttack
from tests.conftest import TinyNet, blobs

CLASSES = 4  # APGD-T and FAB-T need at least 4 classes
EPSILON = 0.1


def tiny_model() -> TinyNet:
    model = TinyNet(classes=CLASSES).eval()
    model.num_classes = CLASSES  # like every advflat model (ImageClassifier)
    return model


def tiny_batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    split = blobs(n, torch.Generator().manual_seed(0), classes=CLASSES)
    return split.x, split.y


def pgd(steps: int = 2) -> PGD:
    return PGD(epsilon=EPSILON, step_size=0.05, steps=steps, restarts=1)


# name -> run(model, x, y): each public entry point, configured to be cheap.
EntryPoint = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], object]
ENTRY_POINTS: dict[str, EntryPoint] = {
    "PGD": lambda m, x, y: pgd()(m, x, y),
    "FGSM": lambda m, x, y: FGSM(epsilon=EPSILON)(m, x, y),
    "APGD": lambda m, x, y: APGD(epsilon=EPSILON, steps=2, restarts=1)(m, x, y),
    "APGD-DLR": lambda m, x, y: APGD(epsilon=EPSILON, steps=2, loss="dlr", restarts=1)(m, x, y),
    "APGDTargeted": lambda m, x, y: APGDTargeted(
        epsilon=EPSILON, steps=2, n_target_classes=2, restarts=1
    )(m, x, y),
    "FAB": lambda m, x, y: FAB(epsilon=EPSILON, steps=2, restarts=1)(m, x, y),
    "FABTargeted": lambda m, x, y: FABTargeted(
        epsilon=EPSILON, steps=2, n_target_classes=2, restarts=1
    )(m, x, y),
    "Square": lambda m, x, y: Square(epsilon=EPSILON, queries=4, restarts=1)(m, x, y),
    "NoAttack": lambda m, x, y: NoAttack()(m, x, y),
    "AutoAttack": lambda m, x, y: custom_autoattack()(m, x, y),
    "AutoAttack.run": lambda m, x, y: custom_autoattack().run(m, x, y),
    "flatness": lambda m, x, y: flatness(
        m, x, y, kind="average", weight_attack=RandomWeightAttack(xi=0.1), attempts=1
    ),
    "measure_flatness": lambda m, x, y: measure_flatness(
        m, [(x, y)], kind="average", weight_attack=RandomWeightAttack(xi=0.1), attempts=1
    ),
    "hessian_spectrum": lambda m, x, y: hessian_spectrum(
        m, [(x, y)], k=1, lanczos_steps=2, tolerance=0.0, probes=0
    ),
    "adversarial_batches": lambda m, x, y: adversarial_batches(m, [(x, y)], pgd()),
    "LossLandscape.curve": lambda m, x, y: LossLandscape(
        direction="random", weight_attack=RandomWeightAttack(xi=0.5), steps=2, scale=0.5, first=None
    ).curve(m, [(x, y)]),
    "LossContour.surface": lambda m, x, y: LossContour(steps=2, scale=0.5, first=None).surface(
        m, [(x, y)]
    ),
}


def custom_autoattack() -> AutoAttack:
    return AutoAttack(
        epsilon=EPSILON, version="custom", attacks=[APGD(epsilon=EPSILON, steps=2, restarts=1)]
    )


def nan_at_first_pixel(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[0] = float("nan")
    return x


def inf_at_last_pixel(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[-1] = float("inf")
    return x


# name -> (make bad (x, y) from good ones, words the message must contain)
BadInputs = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
BAD_INPUTS: dict[str, tuple[BadInputs, list[str]]] = {
    "x in [0, 255]": (lambda x, y: (x * 255, y), ["x must lie in [0, 1]", "divide uint8"]),
    "x in [-1, 1]": (lambda x, y: (2 * x - 1, y), ["x must lie in [0, 1]", "got values in [-"]),
    "NaN x": (lambda x, y: (nan_at_first_pixel(x), y), ["x must be finite", "1 NaN"]),
    "inf x": (lambda x, y: (inf_at_last_pixel(x), y), ["x must be finite", "1 infinite"]),
    "batch sizes differ": (lambda x, y: (x, y[:-1]), ["same batch size, got 8 and 7"]),
    "float labels": (lambda x, y: (x, y.float()), ["y must be an integer", "torch.float32"]),
    "labels out of range": (
        lambda x, y: (x, y + CLASSES),
        [f"class indices in [0, {CLASSES - 1}]", f"{CLASSES} classes"],
    ),
    "negative labels": (
        lambda x, y: (x, y - CLASSES),
        ["class indices in [0,", "got values in [-"],
    ),
    "labels (B, 1)": (lambda x, y: (x, y[:, None]), ["y must have shape (B,) = (8,)"]),
}


@pytest.mark.parametrize("bad", list(BAD_INPUTS))
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_entry_point_rejects_bad_inputs_with_a_message_saying_what_and_why(entry, bad):
    x, y = tiny_batch()
    make_bad, words = BAD_INPUTS[bad]
    with pytest.raises(ValueError) as error:
        ENTRY_POINTS[entry](tiny_model(), *make_bad(x, y))
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_entry_point_accepts_valid_inputs(entry):
    x, y = tiny_batch()
    x = x.clone()
    x.view(-1)[0], x.view(-1)[1] = 0.0, 1.0 + 1e-7  # the box's edges, within rounding
    ENTRY_POINTS[entry](tiny_model(), x, y)


def test_message_names_the_attack_and_the_values_found():
    x, y = tiny_batch()
    with pytest.raises(ValueError) as error:
        pgd()(tiny_model(), 2 * x - 1, y)
    low, high = (2 * x - 1).min().item(), (2 * x - 1).max().item()
    assert str(error.value) == (
        "PGD: x must lie in [0, 1] (advflat's pixel scale; divide uint8 images by 255), "
        f"got values in [{low:.3f}, {high:.3f}]"
    )


def test_negative_labels_are_rejected_for_models_without_num_classes():
    x, y = tiny_batch()
    with pytest.raises(ValueError, match=r"PGD: y must hold class indices >= 0, got values in \[-"):
        pgd()(TinyNet(classes=CLASSES).eval(), x, y - CLASSES)


def test_num_classes_is_read_through_a_wrapper_such_as_ddp():
    wrapper = torch.nn.Module()
    wrapper.module = tiny_model()
    assert input_checks.num_classes(wrapper) == CLASSES


def test_custom_objective_target_is_opaque_but_must_match_the_batch():
    """TRADES attacks the KL to the clean probabilities: a (B, K) float target is fine."""
    x, y = tiny_batch()
    model = tiny_model()
    with torch.no_grad():
        probabilities = model(x).softmax(dim=1)  # (B, K)

    def kl(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.kl_div(logits.log_softmax(dim=1), target, reduction="none").sum(dim=1)

    assert pgd()(model, x, probabilities, kl).shape == x.shape
    with pytest.raises(ValueError, match="same batch size, got 8 and 7"):
        pgd()(model, x, probabilities[:-1], kl)
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\]"):
        pgd()(model, x * 255, probabilities, kl)


class CountedSettle:
    """Wraps the one place a check reads its result back (the host sync on CUDA)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        settle = input_checks._settle

        def counted(*args, **kwargs):
            self.calls += 1
            return settle(*args, **kwargs)

        monkeypatch.setattr(input_checks, "_settle", counted)


def test_pgd_checks_once_per_call_not_per_step(monkeypatch):
    counter = CountedSettle(monkeypatch)
    x, y = tiny_batch()
    PGD(epsilon=EPSILON, step_size=0.02, steps=10, restarts=2)(tiny_model(), x, y)
    assert counter.calls == 1


def test_autoattack_checks_once_not_per_component_or_batch(monkeypatch):
    counter = CountedSettle(monkeypatch)
    x, y = tiny_batch()
    attack = AutoAttack(
        epsilon=EPSILON,
        version="custom",
        attacks=[
            APGD(epsilon=EPSILON, steps=2, restarts=1),
            Square(epsilon=EPSILON, queries=4, restarts=1),
        ],
    )
    attack.run(tiny_model(), x, y, batch_size=3)
    assert counter.calls == 1


def test_robust_flatness_checks_once_not_per_attempt_or_batch(monkeypatch):
    counter = CountedSettle(monkeypatch)
    x, y = tiny_batch()
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    measure_flatness(
        tiny_model(),
        batches,
        kind="average",
        weight_attack=RandomWeightAttack(xi=0.1),
        attempts=3,
        attack=pgd(),
        reference_attack=pgd(),
    )
    assert counter.calls == 1


def test_a_bad_batch_among_several_is_named():
    x, y = tiny_batch()
    batches = [(x[:4], y[:4]), (x[4:] * 255, y[4:])]
    with pytest.raises(ValueError, match=r"^Hessian \(batch 1\): x must lie in \[0, 1\]"):
        hessian_spectrum(tiny_model(), batches, k=1, lanczos_steps=2, tolerance=0.0, probes=0)


def test_checked_inputs_are_not_checked_again():
    """Inside an entry point (``checked()``), nested attacks trust what it has checked."""
    x, y = tiny_batch()
    with input_checks.checked():
        pgd()(tiny_model(), x * 255, y)  # no error: the enclosing caller vouches for x


def test_without_sync_still_raises_on_the_cpu():
    """The asynchronous device assert is for CUDA only; on the CPU a read-back is free."""
    x, y = tiny_batch()
    with input_checks.without_sync(), pytest.raises(ValueError, match="PGD: x must be finite"):
        pgd()(tiny_model(), nan_at_first_pixel(x), y)


def test_without_sync_keeps_an_enclosing_checked_in_force():
    x, y = tiny_batch()
    with input_checks.checked(), input_checks.without_sync():
        pgd()(tiny_model(), x * 255, y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_without_sync_checks_cuda_inputs_without_a_host_sync():
    model = tiny_model().cuda()
    x, y = (t.cuda() for t in tiny_batch())
    torch.cuda.set_sync_debug_mode("error")  # any host sync raises
    try:
        with input_checks.without_sync():
            input_checks.check_inputs("PGD", model, x, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    with pytest.raises(ValueError, match=r"PGD: x must lie in \[0, 1\]"):  # default: one read-back
        input_checks.check_inputs("PGD", model, x * 255, y)
