"""Rotation self-supervision as the paper trains it: the head's shape, the batch composition
(labelled images and rotated copies), which rows are attacked on which objective, the loss
from one train-mode forward, and the head across a resume."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advflat.attacks.base import Attack
from advflat.data.base import ImageData, Split
from advflat.models import MLP
from advflat.training import Trainer
from advflat.training.labels import BatchLabelNoise, label_pairs
from advflat.training.losses.base import BatchPlan
from advflat.training.losses.rotation import RotationPredictor, rotate
from advflat.training.run_directory import RunDirectory
from tests.setups import MLP_CONFIG, loss_of, rotation_loss, step, trainer


class RecordingAttack(Attack):
    """Records every call (model, x, targets) and marks its output: x + 0.25·(call number)."""

    def __init__(self) -> None:
        self.calls: list[tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def perturb(self, model, x, y, objective):
        self.calls.append((model, x.clone(), y.clone(), objective(model(x), y)))
        return x + 0.25 * len(self.calls)


class Unchanged(Attack):
    """Returns its inputs: what the loss feeds the forward is then the batch as prepared."""

    def perturb(self, model, x, y, objective):
        return x


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return MLP(num_classes=3, input_shape=[1, 4, 4], hidden=[16], mean=None, std=None)


def method(batch_size: int = 8, attack: Attack | None = None, **options) -> Trainer:
    attack = RecordingAttack() if attack is None else attack
    return trainer(rotation_loss(**options), attack=attack, batch_size=batch_size)


def distinct_data(n: int = 24) -> ImageData:
    """Images whose 16 pixels are all different, so each image and each of its turns is unique."""
    x = torch.arange(n * 16, dtype=torch.float32).view(n, 1, 4, 4) / (n * 16)
    y = torch.arange(n) % 3
    return ImageData(Split(x, y), Split(x[:6], y[:6]), num_classes=3)


# The batch of 8 the hand-computed tests use: rows 0-3 clean, 4-7 attacked (fraction 0.5);
# labels ≥ 0 are labelled images, −1 − k a copy turned k times.
Y = torch.tensor([0, -1, 2, -3, 1, -2, -4, 2])
LABELLED, ROTATED = [0, 2, 4, 7], [1, 3, 5, 6]
K = torch.tensor([0, 2, 1, 3])  # the rotations of rows 1, 3, 5, 6


def prepared(**options) -> tuple[Trainer, nn.Module]:
    fitted, model = method(**options), mlp()
    fitted.prepare(model, distinct_data(), seed=0)
    return fitted, model


# ---- the head -------------------------------------------------------------------------------
def test_rotation_head_is_linear_d_to_256_relu_linear_256_to_4():
    fitted, model = prepared(head_hidden=256)
    head = fitted.loss.head
    assert isinstance(head, nn.Sequential) and len(head) == 3
    first, act, last = head
    assert isinstance(first, nn.Linear) and (first.in_features, first.out_features) == (16, 256)
    assert isinstance(act, nn.ReLU)
    assert isinstance(last, nn.Linear) and (last.in_features, last.out_features) == (256, 4)


@pytest.mark.parametrize("hidden", [None, 0])
def test_rotation_head_without_hidden_units_is_one_linear_layer(hidden):
    head = prepared(head_hidden=hidden)[0].loss.head
    assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (16, 4)


# ---- the batches ----------------------------------------------------------------------------
def source_and_turns(image: torch.Tensor, train: torch.Tensor) -> tuple[int, int]:
    """(j, k) with rotate(train[j], k) == image (exactly one pair: the images are distinct)."""
    found = [
        (j, k)
        for j in range(len(train))
        for k in range(4)
        if torch.equal(torch.rot90(train[j], k, dims=(1, 2)), image)
    ]
    assert len(found) == 1, found
    return found[0]


def test_batch_of_8_is_4_labelled_images_and_4_turned_copies_of_training_images():
    data = distinct_data()
    fitted, _ = prepared()
    batches = list(fitted.loss.draw(plan_of(fitted), data, data.train.y))
    assert len(batches) == 24 // 8  # one pass over the labelled set at batch size 8
    seen = []
    for x, y in batches:
        assert len(x) == 8 and y.device.type == "cpu"
        labelled, rotated = y >= 0, y < 0
        assert labelled.sum() == 4 and rotated.sum() == 4
        for image, label in zip(x[labelled], y[labelled], strict=True):
            j, k = source_and_turns(image, data.train.x)
            assert k == 0 and label == data.train.y[j]  # upright, with its class
            seen.append(j)
        for image, label in zip(x[rotated], y[rotated], strict=True):
            _, k = source_and_turns(image, data.train.x)
            assert label == -1 - k  # labelled with its number of quarter turns
    assert len(set(seen)) == len(seen) == 12  # labelled images without replacement in an epoch


def test_label_noise_redraws_labels_of_labelled_images_and_leaves_the_copies_k():
    data = distinct_data()
    fitted, _ = prepared()
    plan = BatchPlan(8, True, fitted.generator, BatchLabelNoise(1.0, 3))
    for x, y in fitted.loss.draw(plan, data, data.train.y):
        assert y.shape == (8, 2)  # label pairs: (true, training)
        rotated = y[:, 0] < 0
        assert torch.equal(y[rotated, 0], y[rotated, 1])  # no noise on the rotation targets
        for image, label in zip(x[~rotated], y[~rotated, 0], strict=True):
            assert label == data.train.y[source_and_turns(image, data.train.x)[0]]
        assert ((y[~rotated, 1] >= 0) & (y[~rotated, 1] < 3)).all()


def test_rotations_are_uniform_over_the_four_quarter_turns():
    data = distinct_data(400)
    fitted = method(batch_size=400)
    fitted.prepare(mlp(), data, seed=0)
    ((_, y),) = list(fitted.loss.draw(plan_of(fitted), data, data.train.y))
    counts = torch.bincount(-1 - y[y < 0], minlength=4)
    assert counts.sum() == 200 and counts.min() >= 30  # each k about 50 of 200


def test_rotate_after_augmentation_draws_upright_copies_and_turns_them_in_the_loss():
    data = distinct_data()
    fitted, model = prepared(rotate_after_augmentation=True, attack=Unchanged())
    x, y = next(iter(fitted.loss.draw(plan_of(fitted), data, data.train.y)))
    rotated = y < 0
    assert all(source_and_turns(image, data.train.x)[1] == 0 for image in x[rotated])
    inputs = fitted.loss.inputs(fitted.context, model, x, y)
    torch.testing.assert_close(inputs[rotated], rotate(x[rotated], -1 - y[rotated]))
    torch.testing.assert_close(inputs[~rotated], x[~rotated])


def plan_of(fitted: Trainer) -> BatchPlan:
    return BatchPlan(fitted.batch_size, True, fitted.generator, BatchLabelNoise(0.0, 3))


# ---- which rows are attacked on which objective ---------------------------------------------
def batch_of_8() -> tuple[torch.Tensor, torch.Tensor]:
    x = distinct_data().train.x[:8] * 0.5  # leaves room for the attack's marks in [0, 1]
    return x, Y.clone()


def test_labelled_rows_are_attacked_on_the_main_ce_and_rotated_rows_on_the_rotation_ce():
    fitted, model = prepared()
    x, y = batch_of_8()
    inputs = fitted.loss.inputs(fitted.context, model, x, y)
    (main, x_main, y_main, ce_main), (rot, x_rot, y_rot, ce_rot) = fitted.attack.calls
    # Main: the classifier, rows 4 and 7 (the attacked labelled ones), their labels.
    assert main is model
    torch.testing.assert_close(x_main, x[[4, 7]])
    assert torch.equal(y_main, torch.tensor([1, 2]))
    model.eval()
    torch.testing.assert_close(ce_main, F.cross_entropy(model(x[[4, 7]]), y_main, reduction="none"))
    # Rotation: the head on the features, rows 5 and 6 (the attacked copies), their k.
    assert isinstance(rot, RotationPredictor)
    torch.testing.assert_close(x_rot, x[[5, 6]])
    assert torch.equal(y_rot, torch.tensor([1, 3]))
    logits = fitted.loss.head(model.features(x[[5, 6]]))
    torch.testing.assert_close(ce_rot, F.cross_entropy(logits, y_rot, reduction="none"))
    # Rows 0-3 stay clean; each attacked row holds its own attack's output.
    torch.testing.assert_close(inputs[:4], x[:4])
    torch.testing.assert_close(inputs[[4, 7]], x[[4, 7]] + 0.25)
    torch.testing.assert_close(inputs[[5, 6]], x[[5, 6]] + 0.5)


def test_attacks_run_in_eval_mode_and_leave_the_model_in_its_mode():
    modes = []

    class ModeSpy(RecordingAttack):
        def perturb(self, model, x, y, objective):
            modes.append(model.training)
            return super().perturb(model, x, y, objective)

    fitted, model = prepared(attack=ModeSpy())
    model.train()
    fitted.loss.inputs(fitted.context, model, *batch_of_8())
    assert modes == [False, False] and model.training


# ---- the loss -------------------------------------------------------------------------------
def cross_entropy_by_hand(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -logits.log_softmax(dim=1)[torch.arange(len(y)), y].mean()


@pytest.mark.parametrize("weight", [0.5, 2.0])
def test_loss_is_ce_main_of_labelled_rows_plus_lambda_ce_rotation_of_rotated_rows(weight):
    fitted, model = prepared(rotation_weight=weight)
    x, y = batch_of_8()
    inputs = fitted.loss.inputs(fitted.context, model, x, y)
    outputs = fitted.context.train_forward(inputs)
    loss, stats = fitted.loss.on(fitted.context, outputs, y)
    logits, rotation_logits = outputs
    assert logits.shape == (8, 3) and rotation_logits.shape == (8, 4)
    main = cross_entropy_by_hand(logits[LABELLED], Y[LABELLED])
    rotation = cross_entropy_by_hand(rotation_logits[ROTATED], K)
    torch.testing.assert_close(loss, main + weight * rotation)
    torch.testing.assert_close(stats["rotation_loss"], rotation.detach())
    torch.testing.assert_close(
        stats["clean_loss"], cross_entropy_by_hand(logits[[0, 2]], Y[[0, 2]]).detach()
    )
    torch.testing.assert_close(
        stats["robust_loss"], cross_entropy_by_hand(logits[[4, 7]], Y[[4, 7]]).detach()
    )


def test_under_label_noise_the_attack_targets_true_classes_and_the_main_ce_noisy_ones():
    fitted, model = prepared()
    x, _ = batch_of_8()
    noisy = torch.where(Y >= 0, (Y + 1) % 3, Y)  # every label wrong; the copies keep their k
    y = label_pairs(Y, noisy)
    inputs = fitted.loss.inputs(fitted.context, model, x, y)
    (_, _, y_main, _), (_, _, y_rot, _) = fitted.attack.calls
    assert torch.equal(y_main, Y[[4, 7]]) and torch.equal(y_rot, torch.tensor([1, 3]))
    outputs = fitted.context.train_forward(inputs)
    loss, _ = fitted.loss.on(fitted.context, outputs, y)
    logits, rotation_logits = outputs
    main = cross_entropy_by_hand(logits[LABELLED], noisy[LABELLED])
    rotation = cross_entropy_by_hand(rotation_logits[ROTATED], K)
    torch.testing.assert_close(loss, main + 0.5 * rotation)


def test_each_step_runs_one_train_mode_forward_over_the_whole_batch():
    fitted, model = prepared()
    train_mode_batches: list[int] = []
    model.features = count_features(model, train_mode_batches)  # what both heads read
    step(fitted, model, *batch_of_8())
    assert train_mode_batches == [8]


def count_features(model: nn.Module, seen: list[int]):
    """model.features, recording the batch size of every train-mode call."""
    features = model.features

    def counted(x):
        if model.training:
            seen.append(len(x))
        return features(x)

    return counted


def test_a_batch_without_rotated_copies_trains_the_classifier_alone():
    fitted, model = prepared()
    x, y = batch_of_8()
    y = y.clamp_min(0)  # every row labelled (the trainer's BN recalibration batches)
    loss, stats = loss_of(fitted, model, x, y)
    assert torch.isfinite(loss) and "rotation_loss" not in stats
    assert len(fitted.attack.calls) == 1  # only the main objective is attacked


# ---- checkpoints ----------------------------------------------------------------------------
def test_resume_restores_the_rotation_head_and_the_model_file_holds_the_classifier_alone(
    tmp_path,
):
    data = distinct_data()
    run = RunDirectory(tmp_path, seed=0)
    run.model_config = {**MLP_CONFIG, "hidden": [16]}
    first = method()
    try:
        first.fit(mlp(), data, run)
        saved = {k: v.clone() for k, v in first.loss.head.state_dict().items()}
        state = torch.load(run.last_checkpoint, weights_only=True)
        assert set(state["model"]) == set(mlp().state_dict())  # the classifier alone
        resumed = trainer(rotation_loss(), attack=RecordingAttack(), batch_size=8, epochs=2)
        model = mlp()
        resumed.prepare(model, data, seed=0)
        assert resumed.resume(model, run) == 2
    finally:
        run.close()
    for key, value in resumed.loss.head.state_dict().items():
        assert torch.equal(value, saved[key]), key


# ---- options --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rotation_weight": -1.0}, r"^rotation_weight must be >= 0"),
        ({"rotated_share": 0.0}, r"^rotated_share must be in"),
        ({"rotated_share": 1.0}, r"^rotated_share must be < 1"),
        ({"head_hidden": -1}, r"^head_hidden must be >= 0"),
        ({"head_hidden": 2.5}, r"^head_hidden must be an integer"),
        ({"rotate_after_augmentation": "yes"}, r"^rotate_after_augmentation must be a bool"),
    ],
)
def test_bad_rotation_options_are_rejected_with_a_one_line_message(options, message):
    with pytest.raises(ValueError, match=message):
        rotation_loss(**options)
