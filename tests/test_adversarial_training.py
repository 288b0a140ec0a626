"""PGD-AT's loss (the fraction split, the attack's mode), the ε warm-up, and the trainer's
option checks."""

import copy
import logging

import pytest
import torch
import torch.nn.functional as F

from advflat.attacks.base import Attack
from advflat.attacks.pgd import PGD
from advflat.training.losses import CleanLoss
from advflat.training.run_directory import RunDirectory
from advflat.training.schedules import Constant
from tests.setups import PLAIN, at_loss, loss_of, sgd, trainer


class ShiftAttack(Attack):
    """A deterministic stand-in attack that records the model's mode when called."""

    def __init__(self) -> None:
        self.modes: list[bool] = []

    def perturb(self, model, x, y, objective):
        self.modes.append(model.training)
        return (x + 0.1).clamp(0, 1)


def at(fraction: float, **kwargs):
    return trainer(at_loss(fraction=fraction), attack=ShiftAttack(), **kwargs)


@pytest.mark.parametrize(("fraction", "clean"), [(1.0, 0), (0.5, 5), (0.3, 7), (0.05, 9)])
def test_loss_weighs_clean_and_adversarial_parts_by_the_realised_share(tiny_net, fraction, clean):
    x, y = torch.rand(10, 1, 4, 4), torch.randint(0, 3, (10,))
    method = at(fraction)
    reference = copy.deepcopy(tiny_net)
    loss, stats = loss_of(method, tiny_net, x, y)

    reference.train()
    logits = reference(torch.cat([x[:clean], (x[clean:] + 0.1).clamp(0, 1)]))
    share = (10 - clean) / 10
    adversarial = F.cross_entropy(logits[clean:], y[clean:])
    expected = (
        adversarial
        if clean == 0
        else (1 - share) * F.cross_entropy(logits[:clean], y[:clean]) + share * adversarial
    )
    assert method.loss.split(10) == clean
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert ("clean_loss" in stats) == (clean > 0)
    assert stats["robust_loss"].item() == pytest.approx(adversarial.item(), rel=1e-6)


def test_attack_runs_in_eval_mode_then_one_train_mode_forward(tiny_net):
    method = at(1.0)
    loss_of(method, tiny_net, torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,)))
    assert method.loss.training_attack.modes == [False]
    assert tiny_net.training
    method = at(1.0, attack_in_eval_mode=False)
    loss_of(method, tiny_net, torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,)))
    assert method.loss.training_attack.modes == [True]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, r"^epochs must be >= 1"),
        ({"label_smoothing": -0.1}, r"^label_smoothing must be in"),
        ({"epsilon_warmup_epochs": -1}, r"^epsilon_warmup_epochs must be >= 0"),
        ({"optimizer": sgd(0.0)}, r"^optimizer.lr must be > 0, got 0"),
    ],
)
def test_bad_trainer_options_are_rejected_when_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        at(1.0, **kwargs)


@pytest.mark.parametrize(
    ("fraction", "message"),
    [(1.5, r"^fraction must be in \(0.0, 1.0\], got 1.5"), (0.0, r"^fraction must be in")],
)
def test_bad_fractions_are_rejected_when_built(fraction, message):
    with pytest.raises(ValueError, match=message):
        at_loss(fraction=fraction)


def test_a_zero_or_negative_learning_rate_is_refused_naming_the_key():
    from functools import partial

    for lr in (0.0, -0.1):
        with pytest.raises(ValueError, match=rf"^optimizer.lr must be > 0, got {lr}"):
            trainer(optimizer=partial(torch.optim.SGD, lr=lr))


def test_optimizer_options_are_validated_before_training():
    def bad(params):
        return torch.optim.SGD(params, lr=-1.0)

    with pytest.raises(ValueError, match="^optimizer: Invalid learning rate"):
        trainer(optimizer=bad)


def test_adversarial_training_needs_an_attack():
    with pytest.raises(ValueError, match="^AdversarialLoss trains against an input attack"):
        trainer(at_loss(), attack=None)


def test_no_snapshots_is_a_one_line_warning(caplog):
    with caplog.at_level(logging.WARNING):
        trainer(snapshot_every=0)
    assert "no snapshots: flatness over epochs and advflat-eval --all need them" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        trainer(snapshot_every=5)
    assert "no snapshots" not in caplog.text


class RecordingPGD(PGD):
    """PGD that records the ε and step size of every call."""

    seen: list[tuple[float, float]]

    def perturb(self, model, x, y, objective):
        self.seen.append((self.epsilon, self.step_size))
        return super().perturb(model, x, y, objective)


def test_epsilon_warm_up_ramps_the_training_attack_linearly_from_the_first_epoch(
    tmp_path, tiny_data, tiny_net
):
    attack = RecordingPGD(epsilon=0.3, step_size=0.1, steps=1, restarts=1)
    RecordingPGD.seen = []  # shared by the warm-up's rebuilt attacks
    method = trainer(
        at_loss(),
        epochs=5,
        batch_size=48,  # 2 steps per epoch
        epsilon_warmup_epochs=3,
        snapshot_every=0,
        test_batches=0,
        attack=attack,
    )
    run = RunDirectory(tmp_path, seed=0)
    try:
        method.fit(tiny_net, tiny_data, run)
    finally:
        run.close()
    # epoch e <= W = 3 trains at e/3 of ε = 0.3 (and of the step 0.1), then at ε.
    epsilons = [0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]
    assert [e for e, _ in attack.seen] == pytest.approx(epsilons)
    assert [s for _, s in attack.seen] == pytest.approx([e / 3 for e in epsilons])
    logged = [RunDirectory(tmp_path).history()[str(e)]["train/epsilon"] for e in range(1, 6)]
    assert logged == pytest.approx([0.1, 0.2, 0.3, 0.3, 0.3])
    assert (attack.epsilon, attack.step_size) == (0.3, 0.1)  # the test curves' attack is intact


def test_clean_training_logs_no_epsilon_and_refuses_nothing():
    method = trainer(CleanLoss(), **{**PLAIN, "epsilon_warmup_epochs": 2}, scheduler=Constant())
    assert method.warm_up(1) == {}
