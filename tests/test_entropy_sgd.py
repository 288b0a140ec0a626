"""Entropy-SGD as an update rule: reduction to SGD, the Langevin step, scoping, epochs."""

import copy
import math

import pytest
import torch

from advflat.attacks.base import Attack
from advflat.training.context import TrainingContext
from tests.setups import at_loss, entropy_update, sgd, step, trades_loss, trainer


class ShiftAttack(Attack):
    def perturb(self, model, x, y, objective):
        return (x + 0.1).clamp(0, 1)


def entropy_sgd(lr: float, momentum: float = 0.0, loss=None, batch_size: int = 8, **update):
    return trainer(
        at_loss() if loss is None else loss,
        entropy_update(**update),
        batch_size=batch_size,
        optimizer=sgd(lr, momentum),
        attack=ShiftAttack(),
    )


@pytest.mark.parametrize("mean_decay", [0.0, 0.75])
def test_one_inner_step_without_noise_or_coupling_is_sgd_on_the_adversarial_loss(
    tiny_net, tiny_data, mean_decay
):
    # w' = w − η'g, μ = a·w + (1 − a)·w', so w − μ = (1 − a)·η'·g: SGD with lr α·(1 − a)·η'.
    outer_lr, inner_lr = 0.5, 0.1
    method = entropy_sgd(
        outer_lr, inner_steps=1, inner_lr=inner_lr, noise=0.0, coupling=0.0, mean_decay=mean_decay
    )
    reference, initial = copy.deepcopy(tiny_net), copy.deepcopy(tiny_net)
    plain = trainer(
        at_loss(),
        batch_size=8,
        optimizer=sgd(outer_lr * (1 - mean_decay) * inner_lr, momentum=0.0),
        attack=ShiftAttack(),
    )
    method.prepare(tiny_net, tiny_data, seed=0)
    plain.prepare(reference, tiny_data, seed=0)
    x, y = tiny_data.train.x[:8], tiny_data.train.y[:8]
    stats = step(method, tiny_net, x, y)
    expected = step(plain, reference, x, y)
    for (name, p), q in zip(tiny_net.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=name)
    moved = [
        not torch.equal(p, q)
        for p, q in zip(tiny_net.parameters(), initial.parameters(), strict=True)
    ]
    assert any(moved)  # (the bias before BN has no gradient)
    assert stats["robust_loss"].item() == pytest.approx(expected["robust_loss"].item())


def test_langevin_step_follows_the_coupled_gradient_and_updates_the_running_mean():
    update = entropy_update(inner_lr=0.1, noise=0.0, mean_decay=0.75)
    w_prime, anchor = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0])
    mean, gradient, gamma = anchor.clone(), torch.tensor([0.5, -1.0]), 2.0
    expected = w_prime - 0.1 * (gradient + gamma * (w_prime - anchor))  # [0.75, 2.3]
    update._langevin_step(TrainingContext(), [w_prime], [gradient], [anchor], [mean], gamma)
    torch.testing.assert_close(w_prime, expected)
    torch.testing.assert_close(mean, 0.75 * anchor + 0.25 * expected)


def test_langevin_noise_has_the_configured_scale():
    update = entropy_update(inner_lr=0.04, noise=0.5)
    p = torch.zeros(200_000)
    update._langevin_step(
        TrainingContext(), [p], [torch.zeros_like(p)], [p.clone()], [p.clone()], 0.0
    )
    assert p.std().item() == pytest.approx(math.sqrt(0.04) * 0.5, rel=0.01)  # √η'·ε


def test_coupling_grows_by_the_scoping_factor_per_outer_step_and_is_capped():
    update = entropy_update(coupling=1e-4, scoping=1e-3, inner_lr=0.1)
    for steps in [0, 1, 1000]:
        update.outer_steps = steps
        assert update.gamma() == pytest.approx(1e-4 * 1.001**steps, rel=1e-9)
    update.outer_steps = 20_000  # 1e-4·1.001^20000 ≈ 4.8e4 > 1/η' = 10
    assert update.gamma() == pytest.approx(10.0)


def test_outer_step_uses_the_configured_momentum_and_scoping_advances(tiny_net, tiny_data):
    method = entropy_sgd(0.1, momentum=0.9, inner_steps=2)
    method.prepare(tiny_net, tiny_data, seed=0)
    step(method, tiny_net, tiny_data.train.x[:16], tiny_data.train.y[:16])
    buffers = [method.optimizer.state[p]["momentum_buffer"] for p in tiny_net.parameters()]
    assert all(b is not None and b.abs().sum() > 0 for b in buffers)
    assert method.update.outer_steps == 1


def test_entropy_sgd_composes_with_another_loss(tiny_net, tiny_data):
    """TRADES with the Entropy-SGD update: the loss's statistics, the rule's coupling."""
    method = entropy_sgd(0.1, loss=trades_loss(6.0), inner_steps=2)
    method.prepare(tiny_net, tiny_data, seed=0)
    stats = step(method, tiny_net, tiny_data.train.x[:16], tiny_data.train.y[:16])
    assert {"kl", "clean_loss", "robust_loss", "coupling"} <= set(stats)


def test_an_epoch_has_one_outer_step_per_batch_and_reads_l_passes(tiny_data, tiny_net):
    method = entropy_sgd(0.1, inner_steps=3, batch_size=32)
    method.prepare(tiny_net, tiny_data, seed=0)
    groups = list(method.epoch_steps(tiny_data, tiny_data.train.y))
    assert len(groups) == tiny_data.train.num_batches(32, drop_last=True) == 3
    assert all(len(y) == 3 * 32 for _, y in groups)
    seen = torch.cat([x.flatten(1) for x, _ in groups])
    counts = (seen[:, None, :] == tiny_data.train.x.flatten(1)[None]).all(-1).sum(0)
    assert torch.equal(counts, torch.full_like(counts, 3))  # every image once per pass


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"inner_steps": 0}, r"^inner_steps must be >= 1"),
        ({"inner_lr": 0.0}, r"^inner_lr must be > 0"),
        ({"noise": -1e-4}, r"^noise must be >= 0"),
        ({"coupling": -1.0}, r"^coupling must be >= 0"),
        ({"scoping": -1.0}, r"^scoping must be >= 0"),
        ({"mean_decay": 1.5}, r"^mean_decay must be in \[0.0, 1.0\]"),
    ],
)
def test_bad_entropy_sgd_options_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        entropy_update(**kwargs)
