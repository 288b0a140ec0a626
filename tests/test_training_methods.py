"""The paper's training methods: each beats normal training in robust error on digits, and each
AT variant (label leaking, ignore incorrect, PGD-K-τ, weight clipping, early stopping, extra
data, rotation) does what it promises, including across a resume."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch import nn

from advflat.attacks.base import Attack
from advflat.attacks.friendly_pgd import FriendlyPGD
from advflat.attacks.pgd import PGD
from advflat.core.errors import ConfigError
from advflat.data import Digits, PseudoLabelled
from advflat.data.base import ImageData, Split
from advflat.evaluation.reference import robust_losses
from advflat.models import MLP
from advflat.training import EarlyStopping, Trainer
from advflat.training import checkpoint as ckpt
from advflat.training.losses.rotation import rotate
from advflat.training.run_directory import RunDirectory
from advflat.training.schedules import MultiStep
from tests.conftest import blobs
from tests.setups import (
    MLP_CONFIG,
    adversarial_weights,
    at_loss,
    awp_update,
    entropy_update,
    mart_loss,
    random_weights,
    rotation_loss,
    semi_loss,
    sgd,
    step,
    trades_loss,
    trainer,
)

EPSILON = 0.2  # digits have 17 grey levels: ε = 0.2 is ~3 of them


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return Digits()


# What best.pt records: it must describe digits_model, whose weights a checkpoint reader checks.
DIGITS_MODEL = {"_target_": "advflat.models.MLP", "num_classes": 10, "input_shape": [1, 8, 8],
                "hidden": [64]}  # fmt: skip


def digits_model(data: ImageData) -> nn.Module:
    return MLP(num_classes=10, input_shape=[1, 8, 8], hidden=[64], mean=data.mean, std=data.std)


def train_on_digits(tmp_path, data: ImageData, **kwargs) -> float:
    """2 epochs with PGD-7 at ε = 0.2; returns the PGD-10 robust test error."""
    torch.manual_seed(0)
    options = {
        "epochs": 2,
        "snapshot_every": 0,
        "test_batches": 0,
        "attack": PGD(epsilon=EPSILON, step_size=EPSILON / 4, steps=7, restarts=1),
    }
    run = RunDirectory(tmp_path, seed=0)
    run.model_config = DIGITS_MODEL  # best.pt (early stopping) names the model it holds
    try:
        model = trainer(**{**options, **kwargs}).fit(digits_model(data), data, run)
    finally:
        run.close()
    torch.manual_seed(1)
    attack = PGD(epsilon=EPSILON, step_size=EPSILON / 4, steps=10, restarts=1)
    return robust_losses(model.eval(), data.test, attack, batch_size=300).mean_error()


@pytest.fixture(scope="module")
def normal_error(digits, tmp_path_factory) -> float:
    return train_on_digits(tmp_path_factory.mktemp("normal"), digits)


def extra_digits(data: ImageData) -> Split:
    """A stand-in for the pseudo-labelled images: noisy copies of training digits, labelled."""
    generator = torch.Generator().manual_seed(7)
    noise = 0.1 * torch.randn(data.train.x[:600].shape, generator=generator)
    return Split((data.train.x[:600] + noise).clamp(0, 1), data.train.y[:600])


def heldout_stopping(data: ImageData) -> EarlyStopping:
    attack = PGD(epsilon=EPSILON, step_size=EPSILON / 4, steps=7, restarts=2)
    return EarlyStopping(attack=attack, last=100)


# name: the trainer's options (loss, update, weight attack, ...) given the data
METHODS = {
    "adversarial": lambda data: {"loss": at_loss()},
    "fraction50": lambda data: {"loss": at_loss(fraction=0.5)},
    "trades": lambda data: {"loss": trades_loss()},
    "mart": lambda data: {"loss": mart_loss()},
    "awp": lambda data: {
        "loss": at_loss(),
        "update": awp_update(),
        "weight_attack": adversarial_weights(),
    },
    "rwp": lambda data: {
        "loss": at_loss(),
        "update": awp_update(),
        "weight_attack": random_weights(),
    },
    "entropy_sgd": lambda data: {
        "loss": at_loss(),
        "update": entropy_update(inner_steps=2),
        "optimizer": sgd(1.0),
    },
    "semi_supervised": lambda data: {"loss": semi_loss(extra_digits(data))},
    "rotation": lambda data: {"loss": rotation_loss()},
    "prevent_label_leaking": lambda data: {"loss": at_loss(prevent_label_leaking=True)},
    "ignore_incorrect": lambda data: {"loss": at_loss(ignore_incorrect=True)},
    "friendly": lambda data: {"loss": at_loss(friendly_tau=1)},
    "weight_clipping": lambda data: {"loss": at_loss(), "weight_clipping": 0.5},
    "ema": lambda data: {"loss": at_loss(), "ema_decay": 0.9},
    "early_stopping": lambda data: {
        "loss": at_loss(),
        "early_stopping": heldout_stopping(data),
    },
}


@pytest.mark.parametrize("name", list(METHODS))
def test_each_method_beats_normal_training_in_robust_error_on_digits(
    tmp_path, digits, normal_error, name
):
    error = train_on_digits(tmp_path, digits, **METHODS[name](digits))
    assert error < normal_error - 0.05, (error, normal_error)


# ---- stand-ins ----------------------------------------------------------------------------
class ShiftAttack(Attack):
    """Deterministic: shifts every pixel by +0.1; records the targets it was given."""

    def __init__(self) -> None:
        self.targets: list[torch.Tensor] = []

    def perturb(self, model, x, y, objective):
        self.targets.append(y)
        return (x + 0.1).clamp(0, 1)


def tiny(loss=None, **kwargs):
    return trainer(at_loss() if loss is None else loss, **{"attack": ShiftAttack(), **kwargs})


class Fixed(nn.Module):
    """Predicts class 0 for x[..., 0] > 0.5 and class 1 otherwise."""

    def forward(self, x):
        first = x.flatten(1)[:, :1]
        return torch.cat([first - 0.5, 0.5 - first], dim=1)


# ---- AT variants --------------------------------------------------------------------------
def test_prevent_label_leaking_attacks_the_predicted_label():
    x = torch.tensor([0.9, 0.1, 0.8]).view(3, 1, 1, 1)
    y = torch.tensor([1, 1, 0])
    method = tiny(at_loss(prevent_label_leaking=True))
    method.loss.adversarial(method.context, Fixed(), x, y)
    assert torch.equal(method.attack.targets[0], torch.tensor([0, 1, 0]))
    plain = tiny()
    plain.loss.adversarial(plain.context, Fixed(), x, y)
    assert torch.equal(plain.attack.targets[0], y)


def test_ignore_incorrect_trains_misclassified_examples_clean():
    x = torch.tensor([0.9, 0.1, 0.8]).view(3, 1, 1, 1)
    y = torch.tensor([1, 1, 0])  # the first is misclassified
    method = tiny(at_loss(ignore_incorrect=True))
    inputs = method.loss.inputs(method.context, Fixed(), x, y)
    torch.testing.assert_close(inputs, torch.tensor([0.9, 0.2, 0.9]).view(3, 1, 1, 1))


class Linear2(nn.Module):
    """Two classes, logit margin z_0 − z_1 = 2·sum(x) − 1: class 0 iff sum(x) > 0.5."""

    def forward(self, x):
        s = x.flatten(1).sum(dim=1, keepdim=True)
        return torch.cat([s, 1 - s], dim=1)


@pytest.mark.parametrize(("tau", "expected"), [(0, 0.47), (1, 0.42), (2, 0.37), (10, 0.02)])
def test_pgd_k_tau_stops_tau_steps_after_misclassification(tau, expected):
    # Two pixels at 0.41 (sum 0.82, class 0); each signed step lowers both by 0.025, so the sum
    # falls by 0.05 per step: first misclassified after 7 steps (sum 0.47 < 0.5). τ more steps
    # follow; τ >= K = 16 is plain PGD (sum 0.82 − 16 · 0.05 = 0.02).
    x = torch.full((1, 1, 1, 2), 0.41)
    attack = FriendlyPGD(epsilon=0.41, step_size=0.025, steps=16, tau=tau, norm="linf", init="zero")
    x_adv = attack(Linear2(), x, torch.tensor([0]))
    assert x_adv.sum().item() == pytest.approx(expected, abs=1e-5)


def test_friendly_attack_takes_the_geometry_of_the_configured_pgd():
    pgd = PGD(epsilon=0.03, step_size=0.01, steps=5, restarts=1)
    method = tiny(at_loss(friendly_tau=2), attack=pgd)
    training = method.loss.training_attack
    assert isinstance(training, FriendlyPGD)
    assert (training.epsilon, training.steps) == (0.03, 5)
    assert training.tau == 2 and method.attack is pgd  # test curves keep PGD


def test_weight_clipping_bounds_every_weight_after_every_step(tiny_data, tiny_net):
    method = tiny(weight_clipping=0.05, optimizer=sgd(1.0))
    method.prepare(tiny_net, tiny_data, seed=0)
    for x, y in method.batches(tiny_data, tiny_data.train.y):
        step(method, tiny_net, x, y)
        assert max(p.abs().max().item() for p in tiny_net.parameters()) > 0.05  # not vacuous
        method.after_step(tiny_net)
        bound = torch.tensor(0.05)  # in float32, like the weights
        assert all((p.abs() <= bound).all() for p in tiny_net.parameters())


# ---- early stopping -----------------------------------------------------------------------
HELDOUT = {1: 0.5, 2: 0.3, 3: 0.4, 4: 0.35}  # the best epoch is 2


class ScriptedStopping(EarlyStopping):
    """Held-out errors by epoch (the selection logic is what is under test)."""

    def update(self, model, data, run, epoch):
        self.epoch = epoch
        return super().update(model, data, run, epoch)

    def heldout_performance(self, model, data):
        error = HELDOUT[self.epoch]
        return {"clean_error": 0.0, "robust_loss": error, "robust_error": error}


class PreemptedError(Exception):
    pass


def killed_after(cls, epoch: int):
    """A trainer class that dies right after writing the checkpoint of ``epoch``."""

    def save(self, model, run, saved):
        cls.save(self, model, run, saved)
        if saved == epoch:
            raise PreemptedError

    return type(f"Killed{cls.__name__}", (cls,), {"save": save})


def fit_tiny(path, data, cls=Trainer, epochs=4, **kwargs):
    torch.manual_seed(0)
    model = ckpt.build_model(MLP_CONFIG)
    run = RunDirectory(path, seed=3)
    run.model_config = MLP_CONFIG
    options = {
        "epochs": epochs,
        "scheduler": MultiStep(milestones=[3], gamma=0.1),
        "snapshot_every": 1,
        "test_batches": 1,
        "attack": PGD(epsilon=0.1, step_size=0.05, steps=2, restarts=1),
        "loss": at_loss(),
    }
    try:
        return trainer(cls=cls, **{**options, **kwargs}).fit(model, data, run)
    finally:
        run.close()


def test_early_stopping_keeps_the_snapshot_with_the_lowest_heldout_robust_error(
    tmp_path, tiny_data
):
    stopping = ScriptedStopping(attack=ShiftAttack(), last=8)
    final = fit_tiny(tmp_path, tiny_data, early_stopping=stopping)
    best = torch.load(tmp_path / "checkpoints/best.pt", weights_only=True)
    snapshot = torch.load(tmp_path / "checkpoints/epoch_002.pt", weights_only=True)
    last = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    assert best["epoch"] == 2 and best["heldout_robust_error"] == 0.3
    for key, value in snapshot["model"].items():
        assert torch.equal(best["model"][key], value), key
        assert torch.equal(final.state_dict()[key], value), key  # the run returns best.pt
    assert not all(torch.equal(last["model"][k], v) for k, v in snapshot["model"].items())
    history = RunDirectory(tmp_path).history()
    assert [history[str(e)]["heldout/best_robust_error"] for e in range(1, 5)] == [
        0.5,
        0.3,
        0.3,
        0.3,
    ]


def test_early_stopping_remembers_the_best_error_across_a_resume(tmp_path, tiny_data):
    def stopping():
        return ScriptedStopping(attack=ShiftAttack(), last=8)

    with pytest.raises(PreemptedError):
        fit_tiny(tmp_path, tiny_data, killed_after(Trainer, 3), early_stopping=stopping())
    fit_tiny(tmp_path, tiny_data, early_stopping=stopping())
    best = torch.load(tmp_path / "checkpoints/best.pt", weights_only=True)
    assert best["epoch"] == 2  # epoch 4 (0.35) must not replace the epoch-2 best after resuming


def test_heldout_performance_runs_the_attack_on_the_last_test_images(tiny_data, tiny_net):
    attack = ShiftAttack()
    stopping = EarlyStopping(attack=attack, last=20, batch_size=8)
    performance = stopping.heldout_performance(tiny_net, tiny_data)
    seen = torch.cat(attack.targets)
    assert torch.equal(seen, tiny_data.test.y[-20:])
    assert 0.0 <= performance["robust_error"] <= 1.0


# ---- methods with state survive a resume --------------------------------------------------
def tiny_extra() -> Split:
    return blobs(64, torch.Generator().manual_seed(5))


# Every loss × update pair that carries state or draws randomness (the loss's head, extra data,
# the update's step count, ν₀), each resumed after epoch 2 of 4.
RESUMABLE = {
    "at_sgd": lambda: {"loss": at_loss(fraction=0.5)},
    "trades_sgd": lambda: {"loss": trades_loss()},
    "mart_sgd": lambda: {"loss": mart_loss()},
    "at_entropy_sgd": lambda: {
        "loss": at_loss(),
        "update": entropy_update(inner_steps=2, noise=1e-3, coupling=0.5),
    },
    "rotation_sgd": lambda: {"loss": rotation_loss(rotation_weight=1.0)},
    "semi_supervised_sgd": lambda: {"loss": semi_loss(tiny_extra, unlabelled_share=0.5)},
    "at_awp": lambda: {
        "loss": at_loss(),
        "update": awp_update(),
        "weight_attack": adversarial_weights(xi=0.01),
    },
    "trades_rwp": lambda: {
        "loss": trades_loss(),
        "update": awp_update(population=2),
        "weight_attack": random_weights(),
    },
    "rotation_awp": lambda: {
        "loss": rotation_loss(),
        "update": awp_update(),
        "weight_attack": adversarial_weights(),
    },
    "mart_entropy_sgd": lambda: {"loss": mart_loss(), "update": entropy_update(inner_steps=2)},
}


@pytest.mark.parametrize("name", list(RESUMABLE))
def test_resumed_method_ends_with_the_same_model_as_an_uninterrupted_one(tmp_path, tiny_data, name):
    options = RESUMABLE[name]
    uninterrupted = fit_tiny(tmp_path / "a", tiny_data, **options())
    with pytest.raises(PreemptedError):
        fit_tiny(tmp_path / "b", tiny_data, killed_after(Trainer, 2), **options())
    torch.manual_seed(123)
    resumed = fit_tiny(tmp_path / "b", tiny_data, **options())
    for key, value in uninterrupted.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


# ---- rotation -----------------------------------------------------------------------------
def test_rotate_turns_each_image_by_its_own_number_of_quarter_turns():
    image = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2).repeat(4, 1, 1, 1)
    rotated = rotate(image, torch.tensor([0, 1, 2, 3]))
    expected = [[[1, 2], [3, 4]], [[2, 4], [1, 3]], [[4, 3], [2, 1]], [[3, 1], [4, 2]]]
    torch.testing.assert_close(rotated[:, 0], torch.tensor(expected, dtype=torch.float32))


def test_rotation_head_is_optimised_and_checkpointed(tmp_path, tiny_data):
    method = tiny(rotation_loss(rotation_weight=2.0))
    model = ckpt.build_model(MLP_CONFIG)
    method.prepare(model, tiny_data, seed=0)
    head_module = method.loss.head
    head = [p.detach().clone() for p in head_module.parameters()]
    x, y = next(iter(method.batches(tiny_data, tiny_data.train.y)))  # with rotated copies
    stats = step(method, model, x, y)
    assert {"rotation_loss", "rotation_error", "robust_loss", "clean_loss"} <= set(stats)
    assert all(not torch.equal(a, b) for a, b in zip(head, head_module.parameters(), strict=True))
    run = RunDirectory(tmp_path)
    run.model_config = MLP_CONFIG
    method.save(model, run, 1)
    state = torch.load(run.last_checkpoint, weights_only=True)
    for key, value in head_module.state_dict().items():
        assert torch.equal(state["method"]["loss"]["rotation_head"][key], value)
    assert not any(key.startswith("head") for key in state["model"])  # the model stays loadable


def test_rotation_needs_square_images(tiny_net):
    wide = ImageData(
        Split(torch.rand(4, 1, 4, 6), torch.zeros(4, dtype=torch.long)),
        Split(torch.rand(4, 1, 4, 6), torch.zeros(4, dtype=torch.long)),
        3,
    )
    with pytest.raises(ConfigError, match="square images"):
        tiny(rotation_loss()).prepare(tiny_net, wide, seed=0)


# ---- semi-supervised ----------------------------------------------------------------------
def test_every_batch_mixes_in_the_configured_share_of_extra_images(tiny_data, tiny_net):
    extra = Split(torch.full((200, 1, 4, 4), -1.0), torch.full((200,), 2))  # marked images
    method = tiny(semi_loss(extra, unlabelled_share=0.7), batch_size=20)
    method.prepare(tiny_net, tiny_data, seed=0)
    batches = list(method.batches(tiny_data, tiny_data.train.y))
    assert len(batches) == tiny_data.train.num_batches(20, drop_last=True)
    for x, _ in batches:
        assert len(x) == 20 and (x[:, 0, 0, 0] == -1).sum().item() == 14  # round(0.7 · 20)
    labelled = torch.cat([x[x[:, 0, 0, 0] != -1] for x, _ in batches]).flatten(1)
    assert len(labelled.unique(dim=0)) == len(labelled)  # without replacement in an epoch


def test_extra_data_is_read_from_the_pseudo_labelled_file(tmp_path, tiny_net):
    images = np.random.default_rng(0).integers(0, 256, (30, 4, 4, 1), dtype=np.uint8)
    path = tmp_path / "ti_500K_pseudo_labeled.pickle"
    with path.open("wb") as handle:
        pickle.dump({"data": images, "extrapolated_targets": np.arange(30) % 3}, handle)
    generator = torch.Generator().manual_seed(0)
    data = ImageData(blobs(40, generator), blobs(10, generator), num_classes=3)

    def reader():
        return PseudoLabelled(path=str(path))

    method = tiny(semi_loss(reader), batch_size=10)
    method.prepare(tiny_net, data, seed=0)
    extra = method.loss.extra
    assert len(extra) == 30
    torch.testing.assert_close(extra.x[0, 0], torch.from_numpy(images[0, ..., 0]) / 255)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: at_loss(friendly_tau=-1), r"^friendly_tau must be >= 0"),
        (lambda: tiny(weight_clipping=-0.1), r"^weight_clipping must be > 0"),
        (lambda: tiny(ema_decay=0.9, early_stopping=1), r"^early_stopping cannot"),
        (lambda: semi_loss(None), r"^extra must be"),
        (lambda: semi_loss(tiny_extra, unlabelled_share=1.0), r"^unlabelled"),
        (lambda: rotation_loss(rotation_weight=-1.0), r"^rotation_weight must be >= 0"),
    ],
)
def test_bad_method_options_are_rejected(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"last": 0}, r"^last must be >= 1"), ({"attack": None}, r"^attack must be")],
)
def test_bad_early_stopping_options_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EarlyStopping(**{"attack": ShiftAttack(), "last": 8, **kwargs})
