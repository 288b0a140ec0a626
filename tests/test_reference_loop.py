"""The trainer pinned by plain training loops: PGD-AT, TRADES and AWP written out as the few
lines a paper would show, then compared bitwise with ``Trainer`` (fast path off) over an epoch.

The loops use advflat's attack (``PGD``, tested against independent implementations in
test_attacks.py) and, for AWP, the relative ball's primitives (tested against closed forms in
test_weights.py); everything the trainer adds around them — the attack's mode, one
train-mode forward, the loss, the weight perturbation's order, the gradient clamp, restoring w,
the optimizer step, the shuffling — is written here again by hand.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advflat.attacks.pgd import PGD
from advflat.data.base import ImageData
from advflat.training.fast_path import FastPath
from advflat.training.losses.trades import kl_objective
from advflat.training.run_directory import RunDirectory
from advflat.weights.ascent import normalized_step
from advflat.weights.ball import RelativeBall
from advflat.weights.samplers import SAMPLERS
from tests.conftest import TinyNet
from tests.setups import adversarial_weights, at_loss, awp_update, trades_loss, trainer

SEED, BATCH, LR, MOMENTUM = 3, 32, 0.1, 0.9
BETA, XI, CLAMP = 6.0, 0.01, 0.05
OFF = FastPath(autocast=False, channels_last=False, fused_optimizer=False)


def pgd() -> PGD:
    return PGD(epsilon=0.1, step_size=0.03, steps=3, restarts=1)


def batches(data: ImageData):
    """The trainer's epoch: shuffled by a generator seeded with the run seed, remainder dropped."""
    generator = torch.Generator().manual_seed(SEED)
    return data.train.batches(BATCH, shuffle=True, generator=generator, drop_last=True)


def adversarial(model: nn.Module, x, target, objective=None):
    """PGD in eval mode (the paper's attack mode), the caller's mode restored."""
    model.eval()
    x_adv = pgd()(model, x, target) if objective is None else pgd()(model, x, target, objective)
    model.train()
    return x_adv


def pgd_at(model: nn.Module, data: ImageData) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    for x, y in batches(data):
        x_adv = adversarial(model, x, y)
        loss = F.cross_entropy(model(x_adv), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def trades(model: nn.Module, data: ImageData) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    for x, y in batches(data):
        model.eval()
        with torch.no_grad():
            p_clean = F.softmax(model(x), dim=1)
        x_adv = adversarial(model, x, p_clean, kl_objective)
        logits = model(torch.cat([x, x_adv]))
        clean, robust = logits[: len(y)], logits[len(y) :]
        log_p, log_q = F.log_softmax(clean, dim=1), F.log_softmax(robust, dim=1)
        kl = (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()
        loss = F.cross_entropy(clean, y) + BETA * kl
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def awp(model: nn.Module, data: ImageData) -> None:
    """AWP with one ascent step from a uniform-norm start, the element-wise gradient clamp."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    layers = [model.body[1].weight, model.head.weight]  # conv/linear weights, no BN, no biases
    for x, y in batches(data):
        x_adv = adversarial(model, x, y)
        w = [p.detach().clone() for p in layers]
        ball = RelativeBall([p.clone() for p in w], XI)
        nu = ball.project(SAMPLERS["uniform_norm"](ball))
        # One ascent step on ν, taken at w + ν in eval mode.
        model.eval()
        with torch.no_grad():
            for p, v in zip(layers, nu, strict=True):
                p.add_(v)
        gradients = torch.autograd.grad(F.cross_entropy(model(x_adv), y), layers)
        with torch.no_grad():
            for p, original in zip(layers, w, strict=True):
                p.copy_(original)
        nu = normalized_step(ball, nu, list(gradients), XI)
        # The training gradient at w + ν (train mode), clamped, applied to w.
        model.train()
        with torch.no_grad():
            for p, v in zip(layers, nu, strict=True):
                p.add_(v)
        optimizer.zero_grad()
        F.cross_entropy(model(x_adv), y).backward()
        with torch.no_grad():
            for p, original in zip(layers, w, strict=True):
                p.copy_(original)
        for p in model.parameters():
            p.grad = p.grad.clamp(-CLAMP, CLAMP)
        optimizer.step()


def fitted_by_trainer(tmp_path, data: ImageData, loss, **options) -> nn.Module:
    torch.manual_seed(0)
    model = TinyNet()
    method = trainer(loss, attack=pgd(), fast=OFF, test_batches=0, snapshot_every=0, **options)
    torch.manual_seed(SEED)  # the attacks' random starts
    method.fit(model, data, RunDirectory(tmp_path, seed=SEED))
    return model


def fitted_by_reference(data: ImageData, loop) -> nn.Module:
    torch.manual_seed(0)
    model = TinyNet()
    torch.manual_seed(SEED)
    loop(model, data)
    return model


def assert_bitwise_equal(a: nn.Module, b: nn.Module) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), f"{name} differs by {(x.float() - y.float()).abs().max()}"


def test_trainer_equals_a_plain_pgd_at_loop_bitwise(tmp_path, tiny_data):
    trained = fitted_by_trainer(tmp_path, tiny_data, at_loss())
    assert_bitwise_equal(trained, fitted_by_reference(tiny_data, pgd_at))


def test_trainer_equals_a_plain_trades_loop_bitwise(tmp_path, tiny_data):
    trained = fitted_by_trainer(tmp_path, tiny_data, trades_loss(beta=BETA))
    assert_bitwise_equal(trained, fitted_by_reference(tiny_data, trades))


def test_trainer_equals_a_plain_awp_loop_bitwise(tmp_path, tiny_data):
    update = awp_update(gradient_clipping=CLAMP)
    weights = adversarial_weights(xi=XI, steps=1, lr=XI)
    trained = fitted_by_trainer(
        tmp_path, tiny_data, at_loss(), update=update, weight_attack=weights
    )
    assert_bitwise_equal(trained, fitted_by_reference(tiny_data, awp))


def test_the_reference_loops_train_and_end_at_different_weights(tiny_data):
    """The comparisons above can fail: each loop moves the weights, and the three end apart."""
    torch.manual_seed(0)
    initial = TinyNet().head.weight
    ends = [fitted_by_reference(tiny_data, loop).head.weight for loop in (pgd_at, trades, awp)]
    for i, end in enumerate(ends):
        assert not torch.equal(end, initial)
        for other in ends[i + 1 :]:
            assert not torch.equal(end, other)
