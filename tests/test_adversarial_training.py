import copy

import pytest
import torch
import torch.nn.functional as F

from advflat.attacks.base import Attack
from advflat.training import AdversarialTraining, Trainer
from advflat.training.schedules import Constant


class ShiftAttack(Attack):
    """A deterministic stand-in attack that records the model's mode when called."""

    def __init__(self) -> None:
        self.modes: list[bool] = []

    def perturb(self, model, x, y, objective):
        self.modes.append(model.training)
        return (x + 0.1).clamp(0, 1)


def sgd(params):
    return torch.optim.SGD(params, lr=0.1)


def trainer(fraction: float, **kwargs) -> AdversarialTraining:
    return AdversarialTraining(
        epochs=1,
        optimizer=sgd,
        scheduler=Constant(),
        fraction=fraction,
        attack=ShiftAttack(),
        **kwargs,
    )


@pytest.mark.parametrize(("fraction", "clean"), [(1.0, 0), (0.5, 5), (0.3, 7), (0.05, 9)])
def test_loss_weighs_clean_and_adversarial_parts_by_the_realised_share(tiny_net, fraction, clean):
    x, y = torch.rand(10, 1, 4, 4), torch.randint(0, 3, (10,))
    method = trainer(fraction)
    reference = copy.deepcopy(tiny_net)
    loss, stats = method.loss(tiny_net, x, y)

    reference.train()
    logits = reference(torch.cat([x[:clean], (x[clean:] + 0.1).clamp(0, 1)]))
    share = (10 - clean) / 10
    adversarial = F.cross_entropy(logits[clean:], y[clean:])
    expected = (
        adversarial
        if clean == 0
        else (1 - share) * F.cross_entropy(logits[:clean], y[:clean]) + share * adversarial
    )
    assert method.split(10) == clean
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert ("clean_loss" in stats) == (clean > 0)
    assert stats["adversarial_loss"].item() == pytest.approx(adversarial.item(), rel=1e-6)


def test_attack_runs_in_eval_mode_then_one_train_mode_forward(tiny_net):
    method = trainer(1.0)
    method.loss(tiny_net, torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,)))
    assert method.attack.modes == [False]
    assert tiny_net.training
    method = trainer(1.0, attack_in_eval_mode=False)
    method.loss(tiny_net, torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,)))
    assert method.attack.modes == [True]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fraction": 1.5}, r"^fraction must be in \(0.0, 1.0\], got 1.5"),
        ({"fraction": 0.0}, r"^fraction must be in \(0.0, 1.0\]"),
        ({"fraction": 1.0, "epochs": 0}, r"^epochs must be >= 1"),
        ({"fraction": 1.0, "label_smoothing": -0.1}, r"^label_smoothing must be in"),
    ],
)
def test_bad_trainer_options_are_rejected_when_built(kwargs, message):
    base = {"epochs": 1, "optimizer": sgd, "scheduler": Constant(), "attack": ShiftAttack()}
    with pytest.raises(ValueError, match=message):
        AdversarialTraining(**{**base, **kwargs})


def test_optimizer_options_are_validated_before_training():
    def bad(params):
        return torch.optim.SGD(params, lr=-1.0)

    with pytest.raises(ValueError, match="^optimizer: Invalid learning rate"):
        Trainer(epochs=1, optimizer=bad, scheduler=Constant())


def test_adversarial_training_needs_an_attack():
    with pytest.raises(ValueError, match="^attack must be an input attack"):
        AdversarialTraining(epochs=1, optimizer=sgd, scheduler=Constant(), attack=None)
