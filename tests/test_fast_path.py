"""The fast path (advflat.training.fast_path, ``trainer.fast``): every switch composes and
validates, ``autocast=auto`` follows the CPU's bf16 units (advflat.core.cpu_features), the CPU
defaults compute what the plain loop computes, bf16 keeps fp32 master weights, the step loop
never reads the device, attacks take input gradients only, torch.compile wraps the training
forward only. GPU tests (marker ``gpu``) check bf16 against fp32 and the absence of host
synchronisations on CUDA."""

from __future__ import annotations

import collections
import copy
import functools
import os

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from advflat.attacks import inputs as input_checks
from advflat.attacks.base import Attack
from advflat.attacks.pgd import PGD
from advflat.core import cpu_features
from advflat.core.config import build
from advflat.core.errors import ConfigError
from advflat.data import CropFlip
from advflat.data.base import ImageData
from advflat.training.checkpoint import load_optimizer
from advflat.training.fast_path import FastPath, optimizer_kernels
from advflat.training.losses import AdversarialLoss
from advflat.training.run_directory import RunDirectory
from advflat.training.updates import OptimizerStep
from tests.conftest import CONF, blobs
from tests.setups import (
    adversarial_weights,
    at_loss,
    awp_update,
    loss_of,
    sgd,
    step,
    trades_loss,
    trainer,
)

SGD = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)


def conv_net() -> nn.Module:
    """A tiny CNN on (B, 1, 4, 4): 4-D weights, so channels_last has something to convert."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64, 3),
    )


def data(n: int = 96) -> ImageData:
    generator = torch.Generator().manual_seed(0)
    return ImageData(blobs(n, generator), blobs(48, generator), 3, CropFlip(padding=1))


def compose_trainer(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["dataset=digits", *overrides])
    return build(cfg.trainer, "trainer", attack=build(cfg.attack, "attack"), weight_attack=None)


# ---- configuration -------------------------------------------------------------------------
SWITCHES = {
    "autocast": ["auto", "true", "false"],
    "channels_last": ["auto", "true", "false"],
    "cudnn_benchmark": ["true", "false"],
    "compile": ["true", "false"],
    "fused_optimizer": ["auto", "true", "false"],
}
VALUES = {"auto": "auto", "true": True, "false": False}


@pytest.mark.parametrize(
    ("switch", "value"), [(s, v) for s, values in SWITCHES.items() for v in values]
)
def test_every_fast_switch_composes_and_reaches_the_trainer(switch, value):
    trainer = compose_trainer(f"trainer.fast.{switch}={value}")
    assert getattr(trainer.fast, switch) == VALUES[value]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.fast.autocast=yes", "trainer.fast.autocast must be auto, true or false"),
        ("trainer.fast.channels_last=1", "trainer.fast.channels_last must be auto, true or"),
        ("trainer.fast.compile=auto", "trainer.fast.compile must be true or false"),
        ("trainer.fast.cudnn_benchmark=0", "trainer.fast.cudnn_benchmark must be true or false"),
        ("trainer.fast.fused_optimizer=on", "trainer.fast.fused_optimizer must be auto"),
    ],
)
def test_bad_fast_switches_are_config_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        compose_trainer(override)


def test_fused_optimizer_true_needs_an_optimizer_class_with_a_fused_kernel():
    with pytest.raises(ValueError, match="fast.fused_optimizer=true needs a torch optimizer"):
        trainer(
            optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
            fast=FastPath(fused_optimizer=True),
        )


def test_auto_is_on_for_cuda_and_off_for_cpu():
    cuda = FastPath().resolve(torch.device("cuda"), SGD)
    assert (cuda.autocast, cuda.channels_last, cuda.cudnn_benchmark, cuda.compile) == (
        True,
        True,
        True,
        False,
    )
    assert cuda.optimizer_kernel == "fused"
    cpu = FastPath().resolve(torch.device("cpu"), SGD)
    assert (cpu.autocast, cpu.channels_last, cpu.cudnn_benchmark) == (False, False, False)
    assert cpu.optimizer_kernel == "foreach"
    # A factory that does not say what it accepts is called as it is.
    assert FastPath().resolve(torch.device("cuda"), lambda p: SGD(p)).optimizer_kernel is None
    assert optimizer_kernels(functools.partial(torch.optim.Adam, lr=1e-3)) == {"fused", "foreach"}


# ---- bf16 units of the CPU ---------------------------------------------------------------
SAPPHIRE_RAPIDS = (
    "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
    "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
    "processor\t: 1\nmodel name\t: ignored: only the first processor is read\n"
)
ZEN4 = "model name\t: AMD EPYC 9654 96-Core Processor\nflags\t\t: avx2 avx512f avx512_bf16\n"
ICE_LAKE = "model name\t: Intel(R) Xeon(R) Gold 6338\nflags\t\t: avx2 avx512f avx512_vnni\n"
ZEN3 = "model name\t: AMD EPYC 7763 64-Core Processor\nflags\t\t: avx2 fma bmi2\n"
# A flag whose name merely starts like a bf16 one is not that flag.
LOOKALIKE = "model name\t: X\nflags\t\t: amx_bf16x avx512_bf16_foo\n"


@pytest.mark.parametrize(
    ("text", "model", "flags"),
    [
        (SAPPHIRE_RAPIDS, "Intel(R) Xeon(R) Platinum 8480+", ("amx_bf16", "avx512_bf16")),
        (ZEN4, "AMD EPYC 9654 96-Core Processor", ("avx512_bf16",)),
        (ICE_LAKE, "Intel(R) Xeon(R) Gold 6338", ()),
        (ZEN3, "AMD EPYC 7763 64-Core Processor", ()),
        (LOOKALIKE, "X", ()),
        ("", "unknown", ()),
    ],
    ids=["sapphire_rapids", "zen4", "ice_lake", "zen3", "lookalike", "empty"],
)
def test_cpuinfo_gives_the_model_name_and_its_bf16_flags(text, model, flags):
    assert cpu_features.parse_cpuinfo(text) == (model, flags)


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    """Points the detection at a written /proc/cpuinfo, with no override in the environment."""
    path = tmp_path / "cpuinfo"
    monkeypatch.setattr(cpu_features, "CPUINFO", path)
    monkeypatch.delenv(cpu_features.OVERRIDE)
    return path


def test_cpu_features_read_the_flags_and_torchs_capability(cpuinfo):
    cpuinfo.write_text(ZEN4)
    features = cpu_features.cpu_features()
    assert (features.model, features.bf16_flags) == ("AMD EPYC 9654 96-Core Processor",
                                                     ("avx512_bf16",))  # fmt: skip
    assert features.has_bf16_units
    assert features.torch_capability == torch.backends.cpu.get_cpu_capability()


def test_a_machine_without_cpuinfo_has_no_bf16_units(cpuinfo):
    assert not cpuinfo.exists()
    assert cpu_features.cpu_features().model == "unknown"
    assert not cpu_features.cpu_has_bf16_units()


@pytest.mark.parametrize(
    ("text", "override", "expected"),
    [
        (SAPPHIRE_RAPIDS, "0", False),
        (ZEN3, "1", True),
        (SAPPHIRE_RAPIDS, "", True),
        (ZEN3, "", False),
    ],
    ids=["amx_forced_off", "zen3_forced_on", "amx_empty_is_unset", "zen3_empty_is_unset"],
)
def test_the_environment_overrides_the_detected_bf16_units(
    cpuinfo, monkeypatch, text, override, expected
):
    cpuinfo.write_text(text)
    monkeypatch.setenv(cpu_features.OVERRIDE, override)
    assert cpu_features.cpu_has_bf16_units() is expected


def test_an_override_other_than_0_or_1_is_an_error(cpuinfo, monkeypatch):
    monkeypatch.setenv(cpu_features.OVERRIDE, "yes")
    with pytest.raises(ValueError, match="ADVFLAT_CPU_BF16 must be 0 or 1"):
        cpu_features.cpu_has_bf16_units()


def test_the_test_suite_treats_every_cpu_as_lacking_bf16_units():
    # Known answers are fp32 on every machine, AMX ones included (tests/conftest.py).
    assert os.environ[cpu_features.OVERRIDE] == "0"
    assert not cpu_features.cpu_has_bf16_units()


@pytest.mark.parametrize(
    ("text", "autocast"),
    [(SAPPHIRE_RAPIDS, True), (ZEN4, True), (ICE_LAKE, False), (ZEN3, False)],
    ids=["sapphire_rapids", "zen4", "ice_lake", "zen3"],
)
def test_auto_autocast_on_a_cpu_is_on_exactly_with_bf16_units(cpuinfo, text, autocast):
    cpuinfo.write_text(text)
    active = FastPath().resolve(torch.device("cpu"), SGD)
    assert active.autocast is autocast
    # channels_last stays CUDA-only, and forced switches ignore the CPU's features.
    assert active.channels_last is False
    assert FastPath(autocast=False).resolve(torch.device("cpu"), SGD).autocast is False


def test_one_bf16_training_step_keeps_fp32_weights_gradients_optimizer_state_and_loss():
    torch.manual_seed(0)
    model, images = conv_net(), data(16)
    method = trainer(
        at_loss(),
        batch_size=16,
        optimizer=sgd(),
        attack=PGD(epsilon=0.1, step_size=0.05, steps=1, restarts=1),
        fast=FastPath(autocast=True),
    )
    method.prepare(model, images, seed=0)
    assert method.active.autocast
    stats = step(method, model, images.train.x, images.train.y)
    assert stats["robust_loss"].dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())
    momenta = [state["momentum_buffer"] for state in method.optimizer.state.values()]
    assert momenta and all(m.dtype == torch.float32 for m in momenta)


def test_resuming_keeps_this_runs_optimizer_kernel():
    parameter = nn.Parameter(torch.ones(3))
    saved = torch.optim.SGD([parameter], lr=0.1, foreach=True).state_dict()
    fused = torch.optim.SGD([parameter], lr=0.1, fused=True)
    load_optimizer(fused, saved)
    assert fused.param_groups[0]["fused"] is True
    assert not fused.param_groups[0]["foreach"]


# ---- the CPU result is unchanged -----------------------------------------------------------
class Recording(OptimizerStep):
    """The plain update, keeping every step's robust loss (a device tensor: no host read)."""

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []

    def step(self, ctx, loss, model, x, y):
        stats = super().step(ctx, loss, model, x, y)
        self.losses.append(stats["robust_loss"])
        return stats


def train(tmp_path, fast: FastPath):
    torch.manual_seed(0)
    model = conv_net()
    recording = Recording()
    method = trainer(
        at_loss(),
        recording,
        epochs=2,
        optimizer=SGD,
        snapshot_every=0,
        test_batches=1,
        ema_decay=0.9,
        attack=PGD(epsilon=0.1, step_size=0.05, steps=2, restarts=1),
        fast=fast,
    )
    run = RunDirectory(tmp_path, seed=0)
    try:
        final = method.fit(model, data(), run)
    finally:
        run.close()
    return method, torch.stack(recording.losses), final


def test_cpu_defaults_and_forced_switches_train_like_the_plain_loop(tmp_path):
    _, plain_losses, plain = train(tmp_path / "plain", FastPath.off())
    forced = FastPath(channels_last=True, fused_optimizer=True, cudnn_benchmark=True)
    for name, fast in {"defaults": FastPath(), "forced": forced}.items():
        method, losses, final = train(tmp_path / name, fast)
        torch.testing.assert_close(losses, plain_losses, rtol=1e-5, atol=1e-6)
        for key, value in plain.state_dict().items():
            torch.testing.assert_close(final.state_dict()[key], value, rtol=1e-5, atol=1e-6)
        # The switches did take effect (the comparison above is not between two plain loops).
        group = method.optimizer.param_groups[0]
        assert group["foreach"] if name == "defaults" else group["fused"]
        weight = method.context.module[2].weight  # (4, 4, 3, 3)
        assert weight.is_contiguous(memory_format=torch.channels_last) == (name == "forced")


def test_forced_bf16_autocast_keeps_fp32_weights_gradients_and_losses(tmp_path):
    _, fp32_losses, fp32 = train(tmp_path / "fp32", FastPath.off())
    seen: list[torch.dtype] = []
    original = AdversarialLoss.on

    def recording(self, ctx, outputs, y):
        seen.append(outputs.dtype)  # the training forward's logits
        return original(self, ctx, outputs, y)

    AdversarialLoss.on = recording
    try:
        method, bf16_losses, bf16 = train(tmp_path / "bf16", FastPath(autocast=True))
    finally:
        AdversarialLoss.on = original
    assert seen and set(seen) == {torch.bfloat16}  # the forward passes ran in bf16
    assert bf16_losses.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in bf16.parameters())
    assert all(p.grad.dtype == torch.float32 for p in method.context.module.parameters())
    torch.testing.assert_close(bf16_losses, fp32_losses, rtol=0.05, atol=0.02)
    assert not torch.equal(bf16_losses, fp32_losses)  # bf16 really rounded something


# ---- no host synchronisation in the step loop ----------------------------------------------
HOST_READS = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__")


@pytest.fixture
def host_reads(monkeypatch) -> collections.Counter:
    """Counts every read of a tensor's value on the host (a GPU sync on CUDA)."""
    counter: collections.Counter = collections.Counter()
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name, **kwargs):
            counter[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    return counter


METHODS = {
    "normal": lambda: {"ema_decay": 0.9},
    "adversarial": lambda: {"ema_decay": 0.9, "loss": at_loss(fraction=0.5)},
    "trades": lambda: {"loss": trades_loss()},
    "awp": lambda: {
        "loss": at_loss(),
        "update": awp_update(),
        "weight_attack": adversarial_weights(),
    },
    "trades_awp": lambda: {
        "loss": trades_loss(),
        "update": awp_update(),
        "weight_attack": adversarial_weights(),
    },
}


@pytest.mark.parametrize("name", list(METHODS))
def test_the_step_loop_reads_the_device_once_per_epoch_whatever_its_length(host_reads, name):
    def reads(batches: int) -> int:
        torch.manual_seed(0)
        model, images = conv_net(), data(16 * batches)
        method = trainer(
            batch_size=16,
            optimizer=SGD,
            attack=PGD(epsilon=0.1, step_size=0.05, steps=2, restarts=1),
            **METHODS[name](),
        )
        method.prepare(model, images, seed=0)
        host_reads.clear()
        # The attacks' input check reads one boolean per call on the CPU only (on CUDA the
        # trainer makes it a device-side assert; test_input_checks covers that): not counted.
        with input_checks.checked():
            stats = method.train_epoch(model, images, images.train.y)
        assert stats, "the epoch logged its statistics"
        return sum(host_reads.values())

    few, many = reads(2), reads(6)
    assert few == many, f"host reads grow with the number of steps: {few} vs {many}"
    assert many <= 1, f"{many} host reads per epoch ({dict(host_reads)})"


# ---- attacks: input gradients only ---------------------------------------------------------
class Failing(Attack):
    def perturb(self, model, x, y, objective):
        model(x)
        raise RuntimeError("attack failed")


def test_attacks_freeze_parameters_restore_flags_and_leave_gradients_alone(tiny_net):
    tiny_net.head.bias.requires_grad_(False)  # frozen by the user: must stay frozen
    before = [p.requires_grad for p in tiny_net.parameters()]
    for p in tiny_net.parameters():
        p.grad = torch.zeros_like(p)
    during: list[list[bool]] = []
    tiny_net.register_forward_hook(
        lambda module, i, o: during.append([p.requires_grad for p in module.parameters()])
    )
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    PGD(epsilon=0.1, step_size=0.05, steps=3, restarts=1)(tiny_net, x, y)
    assert len(during) >= 3 and not any(any(flags) for flags in during)
    assert [p.requires_grad for p in tiny_net.parameters()] == before
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in tiny_net.parameters())
    with pytest.raises(RuntimeError, match="attack failed"):
        Failing()(tiny_net, x, y)
    assert [p.requires_grad for p in tiny_net.parameters()] == before


def test_adversarial_gradient_is_the_training_losss_alone(tiny_net):
    """The attack's backward passes add nothing to the weight gradients of the AT step."""
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    attack = PGD(epsilon=0.1, step_size=0.05, steps=3, init="zero", restarts=1)
    method = trainer(at_loss(), optimizer=SGD, attack=attack)
    fresh = copy.deepcopy(tiny_net)  # the train forward below moves BN's running statistics
    loss, _ = loss_of(method, tiny_net, x, y)
    loss.backward()
    fresh.eval()
    x_adv = attack(fresh, x, y)
    fresh.train()
    nn.functional.cross_entropy(fresh(x_adv), y).backward()
    from_step = [p.grad for p in tiny_net.parameters()]
    for got, expected in zip(from_step, [p.grad for p in fresh.parameters()], strict=True):
        torch.testing.assert_close(got, expected)


# ---- torch.compile: the training forward only ----------------------------------------------
class Counted(nn.Module):
    """Stands in for torch.compile's wrapper: counts the forwards that go through it."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module, self.calls = module, 0

    def forward(self, x):
        self.calls += 1
        return self.module(x)


def test_compile_wraps_the_training_forward_but_not_attacks_or_the_returned_model(
    tmp_path, monkeypatch
):
    compiled: list[Counted] = []
    monkeypatch.setattr(
        torch, "compile", lambda module: compiled.append(Counted(module)) or compiled[-1]
    )
    model, images = conv_net(), data(64)
    method = trainer(
        at_loss(),
        optimizer=SGD,
        test_batches=0,
        snapshot_every=0,
        attack=PGD(epsilon=0.1, step_size=0.05, steps=3, restarts=1),
        fast=FastPath(compile=True),
    )
    eager_calls = []
    model.register_forward_hook(lambda m, i, o: eager_calls.append(m.training))
    run = RunDirectory(tmp_path, seed=0)
    try:
        final = method.fit(model, images, run)
    finally:
        run.close()
    assert len(compiled) == 1 and compiled[0].module is model
    assert compiled[0].calls == 2  # one training forward per step, two steps
    assert eager_calls.count(False) == 2 * (3 + 1)  # attack steps and PGD's best-iterate pass
    assert final is model


@pytest.mark.slow
def test_torch_compile_trains_like_eager_on_cpu(tmp_path):
    _, eager_losses, _ = train(tmp_path / "eager", FastPath.off())
    _, compiled_losses, _ = train(tmp_path / "compiled", FastPath(compile=True))
    torch.testing.assert_close(compiled_losses, eager_losses, rtol=1e-4, atol=1e-5)


# ---- on a GPU ------------------------------------------------------------------------------
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def trained_digits_model(tmp_path, device):
    from advflat.data import Digits
    from advflat.models import LeNet

    images = Digits().to(device)
    torch.manual_seed(0)
    model = LeNet(
        num_classes=10, input_shape=[1, 8, 8], mean=images.mean, std=images.std, channels=16
    ).to(device)
    method = trainer(
        at_loss(),
        epochs=5,
        batch_size=64,
        optimizer=functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9),
        test_batches=0,
        snapshot_every=0,
        attack=PGD(epsilon=0.2, step_size=0.05, steps=7, restarts=1),
    )
    run = RunDirectory(tmp_path, seed=0)
    try:
        return method.fit(model, images, run).eval(), images
    finally:
        run.close()


@pytest.mark.gpu
@needs_cuda
def test_bf16_and_fp32_pgd_robust_error_agree_within_one_point(tmp_path):
    device = torch.device("cuda")
    model, images = trained_digits_model(tmp_path, device)
    x = torch.cat([images.train.x, images.test.x])  # all 1797 digits: 1 point = 18 images
    y = torch.cat([images.train.y, images.test.y])
    attack = PGD(epsilon=0.2, step_size=0.05, steps=10, restarts=1)

    def robust_error(fast: FastPath) -> float:
        torch.manual_seed(1)
        with fast.resolve(device, SGD).autocast_context():
            logits = model(attack(model, x, y))
        return (logits.argmax(dim=1) != y).float().mean().item()

    fp32 = robust_error(FastPath(autocast=False))
    bf16 = robust_error(FastPath(autocast="auto"))
    assert 0.02 < fp32 < 0.98, f"a model whose robust error ({fp32}) says nothing"
    assert abs(bf16 - fp32) <= 0.01, f"bf16 {bf16:.4f} vs fp32 {fp32:.4f}"


@pytest.mark.gpu
@needs_cuda
def test_the_cuda_step_loop_never_synchronises():
    device = torch.device("cuda")
    torch.manual_seed(0)
    model, images = conv_net().to(device), data(16 * 6).to(device)
    method = trainer(
        at_loss(),
        batch_size=16,
        optimizer=SGD,
        ema_decay=0.9,
        attack=PGD(epsilon=0.1, step_size=0.05, steps=2, restarts=1),
    )
    method.prepare(model, images, seed=0)
    batches = method.batches(images, images.train.y)
    step(method, model, *next(batches))  # warm-up; the epoch's permutation is copied here
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x, y in batches:
            step(method, model, x, y)
            method.after_step(model)
    finally:
        torch.cuda.set_sync_debug_mode("default")
