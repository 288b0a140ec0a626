import pytest
import torch

from advflat.attacks.pgd import PGD
from advflat.errors import ConfigError
from advflat.training import AdversarialTraining
from advflat.training import checkpoint as ckpt
from advflat.training.run_directory import RunDirectory
from advflat.training.schedules import MultiStep

MODEL_CONFIG = {
    "_target_": "advflat.models.MLP",
    "num_classes": 3,
    "input_shape": [1, 4, 4],
    "mean": None,
    "std": None,
    "hidden": [16],
}


class PreemptedError(Exception):
    pass


class KilledAfter(AdversarialTraining):
    """Dies right after writing the checkpoint of ``kill_epoch`` (like a preempted job)."""

    kill_epoch = 2

    def _save(self, model, run, epoch):
        super()._save(model, run, epoch)
        if epoch == self.kill_epoch:
            raise PreemptedError


def make_trainer(cls=AdversarialTraining):
    return cls(
        epochs=4,
        batch_size=32,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
        scheduler=MultiStep(milestones=[3]),
        snapshot_every=2,
        test_batches=1,
        ema_decay=0.9,
        attack=PGD(epsilon=0.1, step_size=0.05, steps=2),
    )


def fit(tmp_path, tiny_data, cls=AdversarialTraining):
    torch.manual_seed(0)
    model = ckpt.build_model(MODEL_CONFIG)
    run = RunDirectory(tmp_path, seed=3)
    run.model_config = MODEL_CONFIG
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
        assert state["model_config"] == MODEL_CONFIG
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
