import pytest
import torch

from advflat.attacks.pgd import PGD
from advflat.core.errors import ConfigError
from advflat.training import AdversarialLoss, OptimizerStep, Trainer
from advflat.training import checkpoint as ckpt
from advflat.training.run_directory import RunDirectory
from advflat.training.schedules import MultiStep
from tests.setups import MLP_CONFIG
from tests.test_safe_loading import MakesFolder


class PreemptedError(Exception):
    pass


class KilledAfter(Trainer):
    """Dies right after writing the checkpoint of ``kill_epoch`` (like a preempted job)."""

    kill_epoch = 2

    def save(self, model, run, epoch):
        super().save(model, run, epoch)
        if epoch == self.kill_epoch:
            raise PreemptedError


def make_trainer(cls=Trainer):
    loss = AdversarialLoss(
        fraction=1.0, prevent_label_leaking=False, ignore_incorrect=False, friendly_tau=None
    )
    return cls(
        loss=loss,
        update=OptimizerStep(),
        label_smoothing=0.0,
        label_noise=0.0,
        label_noise_per_example=False,
        weight_clipping=None,
        epsilon_warmup_epochs=0,
        epochs=4,
        batch_size=32,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
        scheduler=MultiStep(milestones=[3], gamma=0.1),
        snapshot_every=2,
        test_batches=1,
        ema_decay=0.9,
        attack=PGD(epsilon=0.1, step_size=0.05, steps=2, restarts=1),
    )


def fit(tmp_path, tiny_data, cls=Trainer):
    torch.manual_seed(0)
    model = ckpt.build_model(MLP_CONFIG)
    run = RunDirectory(tmp_path, seed=3)
    run.model_config = MLP_CONFIG
    return make_trainer(cls).fit(model, tiny_data, run)


def test_resumed_run_ends_with_the_same_model_as_an_uninterrupted_one(tmp_path, tiny_data):
    uninterrupted = fit(tmp_path / "a", tiny_data)
    with pytest.raises(PreemptedError):
        fit(tmp_path / "b", tiny_data, KilledAfter)
    assert ckpt.read(tmp_path / "b/checkpoints/last.pt")["epoch"] == 2
    torch.manual_seed(123)  # the resumed process starts from a different global RNG state
    resumed = fit(tmp_path / "b", tiny_data)
    for key, value in uninterrupted.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_checkpoints_load_with_weights_only_and_rebuild_the_model(tmp_path, tiny_data):
    model = fit(tmp_path, tiny_data)
    for name in ["last.pt", "final.pt", "epoch_002.pt", "epoch_004.pt"]:
        state = torch.load(tmp_path / "checkpoints" / name, weights_only=True)
        assert state["model_config"] == MLP_CONFIG
    loaded = ckpt.load_model(tmp_path / "checkpoints/final.pt")
    assert not loaded.training
    x = torch.rand(5, 1, 4, 4)
    assert torch.equal(loaded(x), model.eval()(x))


def test_checkpoint_naming_a_foreign_class_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "model_config": {"_target_": "os.system", "command": "true"}}, path)
    with pytest.raises(ConfigError, match="refusing to build 'os.system'"):
        ckpt.load_model(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_corrupt_checkpoint_is_a_clear_error(tmp_path, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="corrupt or not an advflat checkpoint"):
        ckpt.load_model(path)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="checkpoint not found"):
        ckpt.load_model(tmp_path / "nope.pt")


def test_resume_refuses_a_last_checkpoint_with_pickled_code_and_creates_nothing(
    tmp_path, tiny_data
):
    out = tmp_path / "created"
    (tmp_path / "checkpoints").mkdir()
    torch.save({"model": MakesFolder(out), "model_config": MLP_CONFIG},
               tmp_path / "checkpoints/last.pt")  # fmt: skip
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ConfigError, match="refuses to unpickle code") as raised:
        fit(tmp_path, tiny_data)
    assert "\n" not in str(raised.value) and "weights_only" not in str(raised.value)
    assert not out.exists() and sorted(tmp_path.rglob("*")) == before


def test_resume_refuses_a_last_checkpoint_whose_model_config_nests_a_target(tmp_path, tiny_data):
    out = tmp_path / "created"
    poisoned = {**MLP_CONFIG, "activation": {"_target_": "os.makedirs", "_args_": [str(out)]}}
    (tmp_path / "checkpoints").mkdir()
    torch.save(
        {"epoch": 1, "model": {}, "model_config": poisoned}, tmp_path / "checkpoints/last.pt"
    )
    with pytest.raises(ConfigError, match="model_config.activation is a nested config node"):
        fit(tmp_path, tiny_data)
    assert not out.exists()


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"num_classes": 4}, "size mismatch for classifier.weight"),
        ({"hidden": [16, 16]}, "Missing key"),
        ({"hidden": []}, "Unexpected key"),
    ],
)
def test_weights_that_do_not_match_the_model_config_are_a_one_line_error(tmp_path, change, detail):
    model = ckpt.build_model(MLP_CONFIG)
    path = tmp_path / "mismatch.pt"
    torch.save({"epoch": 1, "model": model.state_dict(),
                "model_config": {**MLP_CONFIG, **change}}, path)  # fmt: skip
    with pytest.raises(ConfigError, match="its weights do not match its model config") as raised:
        ckpt.load_model(path)
    assert detail in str(raised.value) and "\n" not in str(raised.value)


def test_snapshots_carry_the_runs_resolved_config_for_advflat_eval(tmp_path):
    model = ckpt.build_model(MLP_CONFIG)
    config = {"seed": 0, "dataset": {"_target_": "advflat.data.Digits"}}
    ckpt.save_model(tmp_path / "epoch_001.pt", model, MLP_CONFIG, 1, config=config)
    state = ckpt.read(tmp_path / "epoch_001.pt")
    assert ckpt.stored_config(state, tmp_path / "epoch_001.pt") == config
    ckpt.save_model(tmp_path / "bare.pt", model, MLP_CONFIG, 1)
    assert ckpt.stored_config(ckpt.read(tmp_path / "bare.pt"), tmp_path / "bare.pt") is None


def test_a_model_config_far_larger_than_its_weights_is_refused_before_any_allocation(tmp_path):
    # 3.6e9 parameters (14 GB) if it were built: compared with the file's weights on the meta
    # device first, so nothing is allocated.
    model = ckpt.build_model(MLP_CONFIG)
    path = tmp_path / "huge.pt"
    torch.save({"epoch": 1, "model": model.state_dict(),
                "model_config": {**MLP_CONFIG, "hidden": [60000, 60000]}}, path)  # fmt: skip
    with pytest.raises(ConfigError, match="its weights do not match its model config"):
        ckpt.load_model(path)


def test_a_stored_model_argument_beyond_the_bound_is_refused_by_name(tmp_path):
    path = tmp_path / "wide.pt"
    wide = {**MLP_CONFIG, "hidden": [ckpt.MAX_ARGUMENT + 1]}
    torch.save({"epoch": 1, "model": {}, "model_config": wide}, path)
    with pytest.raises(
        ConfigError, match=r"model_config.hidden\[0\] must lie in \[-65536, 65536\]"
    ):
        ckpt.load_model(path)
