"""Label noise as the paper trains it: redrawn for every batch, each label replaced with
probability τ by a class uniform over all K, seen by the training loss only (the training attack
targets the true label); and the per-example option, which relabels the training set once."""

from __future__ import annotations

import pytest
import torch
from scipy import stats as scipy_stats

from advflat.attacks.base import Attack
from advflat.data.base import ImageData, Split
from advflat.models import MLP
from advflat.training import Trainer
from advflat.training import checkpoint as ckpt
from advflat.training.context import TrainingContext
from advflat.training.distributed import Distributed
from advflat.training.labels import (
    BatchLabelNoise,
    label_pairs,
    resampled_labels,
    training_labels,
    true_labels,
)
from advflat.training.losses import AdversarialLoss, CleanLoss
from advflat.training.run_directory import RunDirectory
from tests.setups import (
    AT,
    MLP_CONFIG,
    adversarial_weights,
    at_loss,
    awp_update,
    entropy_update,
    mart_loss,
    semi_loss,
    trades_loss,
    trainer,
)

K = 5
N = 100


def coded_data(n: int = N, classes: int = K) -> ImageData:
    """Images that name themselves: pixel 0 codes the example's index, pixel 1 its true label."""
    y = torch.arange(n) % classes
    x = torch.zeros(n, 1, 4, 4)
    x[:, 0, 0, 0] = torch.arange(n) / n
    x[:, 0, 0, 1] = y / classes
    return ImageData(Split(x, y), Split(x[:10].clone(), y[:10].clone()), num_classes=classes)


def index_of(x: torch.Tensor, n: int = N) -> torch.Tensor:
    return (x[:, 0, 0, 0] * n).round().long()


def label_of(x: torch.Tensor, classes: int = K) -> torch.Tensor:
    return (x[:, 0, 0, 1] * classes).round().long()


def model(classes: int = K) -> MLP:
    return MLP(num_classes=classes, input_shape=[1, 4, 4], hidden=[8])


class RecordingAttack(Attack):
    """Returns x unchanged; records each (x, target) it is asked to attack."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def perturb(self, model, x, y, objective):
        self.calls.append((x.clone(), y.clone()))
        return x.clone()


def recording_criterion(method) -> list[torch.Tensor]:
    """Wrap the prepared trainer's training CE so it records the labels it is given."""
    seen: list[torch.Tensor] = []
    criterion = method.context.criterion

    def recorded(logits, y):
        seen.append(y.clone())
        return criterion(logits, y)

    method.context.criterion = recorded
    return seen


def epoch_pairs(method, data: ImageData) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch of the trainer's global batches: (example indices, label pairs (B, 2))."""
    indices, pairs = [], []
    for x, y in method.batches(data, method._training_labels(data, seed=0)):
        indices.append(index_of(x))
        pairs.append(y if y.dim() == 2 else label_pairs(y, y))
    return torch.cat(indices), torch.cat(pairs)


def per_batch(tau: float, **options):
    return trainer(label_noise=tau, batch_size=20, **options)


# ---- (1) the distribution of the redrawn labels --------------------------------------------
def transition_counts(pairs: torch.Tensor, classes: int = K) -> torch.Tensor:
    """(K, K) counts of (true label, training label)."""
    flat = true_labels(pairs) * classes + training_labels(pairs)
    return torch.bincount(flat, minlength=classes * classes).view(classes, classes).double()


def chi_square_p(counts: torch.Tensor, probabilities: torch.Tensor) -> float:
    """Pearson's test of every row of ``counts`` against the row distribution ``probabilities``."""
    expected = counts.sum(dim=1, keepdim=True) * probabilities
    statistic = ((counts - expected) ** 2 / expected).sum().item()
    dof = counts.shape[0] * (counts.shape[1] - 1)
    return float(scipy_stats.chi2.sf(statistic, dof))


def test_redrawn_label_is_true_with_p_1_minus_tau_plus_tau_over_k_and_each_other_with_tau_over_k():
    tau = 0.5
    data = coded_data()
    method = per_batch(tau)
    method.prepare(model(), data, seed=0)
    pairs = torch.cat([epoch_pairs(method, data)[1] for _ in range(200)])  # 20,000 draws
    counts = transition_counts(pairs)
    paper = torch.full((K, K), tau / K) + (1 - tau) * torch.eye(K, dtype=torch.float64)
    assert chi_square_p(counts, paper) > 1e-4
    # The test has the power to tell the paper's draw from "always another class" (P = 1 - τ).
    always_wrong = torch.full((K, K), tau / (K - 1)) * (1 - torch.eye(K, dtype=torch.float64))
    always_wrong += (1 - tau) * torch.eye(K, dtype=torch.float64)
    assert chi_square_p(counts, always_wrong) < 1e-12
    # Plain numbers too: the share kept is (1 − τ) + τ/K = 0.6 within 5σ of its estimate.
    kept = counts.diagonal().sum().item() / counts.sum().item()
    assert kept == pytest.approx(0.6, abs=5 * (0.6 * 0.4 / len(pairs)) ** 0.5)


def test_resampled_labels_with_tau_one_are_uniform_over_all_classes_whatever_the_true_label():
    y = torch.zeros(50_000, dtype=torch.long)
    drawn = resampled_labels(y, 1.0, K, torch.Generator().manual_seed(0))
    counts = torch.bincount(drawn, minlength=K).double()
    assert chi_square_p(counts[None], torch.full((1, K), 1 / K, dtype=torch.float64)) > 1e-4


def test_without_label_noise_batches_carry_plain_labels_and_draw_nothing():
    noise = BatchLabelNoise(0.0, K)
    y = torch.arange(6) % K
    generator = torch.Generator().manual_seed(0)
    before = generator.get_state()
    assert noise.draw(y, generator) is y
    assert torch.equal(generator.get_state(), before)
    assert noise.untouched(y) is y


def test_pseudo_labels_are_carried_as_pairs_with_no_noise_drawn():
    y = torch.tensor([3, 1, 4])
    assert torch.equal(BatchLabelNoise(0.5, K).untouched(y), torch.tensor([[3, 3], [1, 1], [4, 4]]))


def test_label_pairs_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match=r"\(B, 2\) label pairs, got shape \(4, 3\)"):
        true_labels(torch.zeros(4, 3, dtype=torch.long))


# ---- (2) the attack targets the true label, the loss trains on the noisy one -----------------
LOSSES = {
    "adversarial": lambda: at_loss(),
    "adversarial_half": lambda: at_loss(fraction=0.5),
    "ignore_incorrect": lambda: at_loss(ignore_incorrect=True),
    "mart": lambda: mart_loss(),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_the_training_attack_targets_the_true_label_and_the_loss_the_redrawn_one(name):
    data = coded_data()
    attack = RecordingAttack()
    method = per_batch(1.0, loss=LOSSES[name](), attack=attack, test_batches=0)
    method.prepare(model(), data, seed=0)
    seen = recording_criterion(method)
    method.train_epoch(method.context.module, data, data.train.y)
    assert attack.calls, "the attack ran"
    for x, target in attack.calls:
        assert torch.equal(target, label_of(x))  # the true label of every attacked image
    # τ = 1: the loss's labels are uniform over K, so ~(K−1)/K of them differ from the true ones.
    trained = torch.cat(seen)
    attacked = torch.cat([label_of(x) for x, _ in attack.calls])
    if name != "adversarial_half":  # the clean half has no attack call to compare with
        assert (trained != attacked).float().mean().item() > 0.5


UPDATES = {
    "entropy_sgd": lambda: {"update": entropy_update(inner_steps=2)},
    "awp": lambda: {"update": awp_update(), "weight_attack": adversarial_weights()},
}


class RecordingATLoss(AdversarialLoss):
    """AT that records, for every batch, (true labels its inputs code, the labels it trains on)."""

    def __init__(self) -> None:
        super().__init__(**AT)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def inputs(self, ctx, model, x, y):
        inputs = super().inputs(ctx, model, x, y)
        self.seen.append((label_of(inputs), training_labels(y)))
        return inputs


@pytest.mark.parametrize("name", list(UPDATES))
def test_every_update_rule_hands_the_attack_true_labels_and_the_loss_redrawn_ones(name):
    data = coded_data()
    attack, loss = RecordingAttack(), RecordingATLoss()
    method = per_batch(1.0, loss=loss, attack=attack, test_batches=0, **UPDATES[name]())
    method.prepare(model(), data, seed=0)
    method.train_epoch(method.context.module, data, data.train.y)
    assert attack.calls and loss.seen
    for x, target in attack.calls:
        assert torch.equal(target, label_of(x))
    true = torch.cat([true for true, _ in loss.seen])
    trained = torch.cat([trained for _, trained in loss.seen])
    assert (trained != true).float().mean().item() > 0.5


@pytest.mark.parametrize("name", ["trades", "clean"])
def test_trades_and_clean_training_take_the_redrawn_labels_in_their_cross_entropy(name):
    data = coded_data()
    attack = RecordingAttack()
    loss = trades_loss() if name == "trades" else CleanLoss()
    method = per_batch(1.0, loss=loss, attack=attack, test_batches=0)
    method.prepare(model(), data, seed=0)
    seen, true = recording_criterion(method), []
    for x, y in method.batches(data, data.train.y):
        method.update.step(method.context, method.loss, method.context.module, x, y)
        true.append(label_of(x))
    assert len(seen) == len(true)  # one CE per batch
    assert (torch.cat(seen) != torch.cat(true)).float().mean().item() > 0.5
    # TRADES' attack maximises a KL to the clean probabilities: it is given no label at all.
    assert all(target.is_floating_point() for _, target in attack.calls)


def test_semi_supervised_noise_reaches_labelled_images_only():
    data = coded_data()
    extra = Split(torch.full((60, 1, 4, 4), 0.95), torch.full((60,), 2))  # marked, label 2
    method = per_batch(1.0, loss=semi_loss(extra, unlabelled_share=0.5), attack=RecordingAttack())
    method.prepare(model(), data, seed=0)
    for x, y in method.batches(data, data.train.y):
        marked = x[:, 0, 0, 2] == 0.95
        assert torch.equal(y[marked], torch.full((int(marked.sum()), 2), 2))  # pseudo: (2, 2)
        assert torch.equal(true_labels(y)[~marked], label_of(x)[~marked])


LOGITS = torch.tensor([2.0, 0.0, 0.0])  # a model that predicts class 0 whatever it sees


class Constant(torch.nn.Module):
    def forward(self, x):
        return LOGITS.expand(len(x), -1)


@pytest.mark.parametrize("name", ["clean", "adversarial", "trades", "mart"])
def test_train_errors_are_measured_against_the_labels_the_loss_trains_on(name):
    loss = {"clean": CleanLoss, "adversarial": at_loss, "trades": trades_loss, "mart": mart_loss}
    method = loss[name]()
    y = label_pairs(torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 2, 0]))
    x = torch.zeros(4, 1, 1, 1)
    doubled = name in ("trades", "mart")  # clean and adversarial halves in one forward
    inputs = torch.cat([x, x]) if doubled else x
    ctx = TrainingContext()
    value, stats = method.on(ctx, Constant()(inputs), y)
    errors = {key: v.item() for key, v in stats.items() if key.endswith("_error")}
    assert errors and all(v == pytest.approx(0.5) for v in errors.values())  # 2 of 4 ≠ 0
    if name in ("clean", "adversarial"):
        # CE by hand: log(e² + 2) − 2 for label 0, log(e² + 2) for the others.
        ce = torch.log(torch.exp(torch.tensor(2.0)) + 2)
        assert value.item() == pytest.approx((ce - 2 + ce + ce + ce - 2).item() / 4)


# ---- (3) redrawn every batch; (4) the per-example option -----------------------------------
def labels_by_example(method, data: ImageData) -> torch.Tensor:
    """One epoch's training label of every example, in example order."""
    indices, pairs = epoch_pairs(method, data)
    labels = torch.full((N,), -1)
    labels[indices] = training_labels(pairs)
    return labels


def test_the_same_example_gets_different_labels_in_different_epochs():
    data = coded_data()
    method = per_batch(1.0)
    method.prepare(model(), data, seed=0)
    first, second = labels_by_example(method, data), labels_by_example(method, data)
    # τ = 1: two independent uniform draws agree with probability 1/K.
    assert (first != second).float().mean().item() > 0.5


def reference_flips(y: torch.Tensor, tau: float, classes: int, seed: int) -> torch.Tensor:
    """The per-example draw by hand: a uniform offset in 1..K−1 where rand < τ."""
    generator = torch.Generator().manual_seed(seed)
    flip = torch.rand(y.shape, generator=generator) < tau
    offset = torch.randint(1, classes, y.shape, generator=generator)
    return torch.where(flip, (y + offset) % classes, y)


def test_per_example_noise_relabels_every_example_once_from_the_seed_for_attack_and_loss():
    data = coded_data()
    attack = RecordingAttack()
    method = per_batch(0.4, label_noise_per_example=True, loss=at_loss(), attack=attack)
    method.prepare(model(), data, seed=0)
    labels = method._training_labels(data, seed=0)
    expected = reference_flips(data.train.y, 0.4, K, seed=1)  # the run's seed + 1
    assert torch.equal(labels, expected)
    changed = labels != data.train.y
    assert changed.any()  # not vacuous
    first, second = labels_by_example(method, data), labels_by_example(method, data)
    assert torch.equal(first, expected) and torch.equal(second, expected)  # kept every epoch
    seen = recording_criterion(method)
    method.train_epoch(method.context.module, data, labels)
    for x, target in attack.calls:  # the attack sees the relabelled set, as the loss does
        assert torch.equal(target, expected[index_of(x)])
    assert all(y.dim() == 1 for y in seen)


def test_label_noise_per_example_must_be_a_boolean():
    with pytest.raises(ValueError, match="^label_noise_per_example must be one of False, True"):
        trainer(label_noise_per_example="yes")


# ---- (5) resume and data parallelism --------------------------------------------------------
class RecordingCleanLoss(CleanLoss):
    """Clean training that records the label pairs of every batch it trains on."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def on(self, ctx, outputs, y):
        self.seen.append(y.clone())
        return super().on(ctx, outputs, y)


class PreemptedError(Exception):
    pass


def fit(path, data: ImageData, kill_after: int | None = None) -> list[torch.Tensor]:
    """4 epochs of clean training with τ = 0.5; the label pairs its loss saw."""

    class Killed(Trainer):  # dies right after writing the checkpoint of kill_after
        def save(self, model, run, epoch):
            super().save(model, run, epoch)
            if epoch == kill_after:
                raise PreemptedError

    loss = RecordingCleanLoss()
    options = {"label_noise": 0.5, "epochs": 4, "batch_size": 20, "snapshot_every": 0}
    method = trainer(loss, cls=Killed, test_batches=0, **options)
    run = RunDirectory(path, seed=3)
    run.model_config = {**MLP_CONFIG, "num_classes": K}
    try:
        method.fit(ckpt.build_model(run.model_config), data, run)
    except PreemptedError:
        pass
    finally:
        run.close()
    return loss.seen


def test_a_resumed_run_replays_the_same_noisy_labels(tmp_path):
    data = coded_data()
    uninterrupted = fit(tmp_path / "a", data)
    assert len(uninterrupted) == 4 * 5 and all(y.dim() == 2 for y in uninterrupted)
    before = fit(tmp_path / "b", data, kill_after=2)
    torch.manual_seed(123)  # the resumed process starts from another global RNG state
    after = fit(tmp_path / "b", data)
    assert len(before) == 10 and len(after) == 10
    for expected, got in zip(uninterrupted, before + after, strict=True):
        assert torch.equal(expected, got)


def test_every_rank_gets_its_share_of_the_one_process_global_label_pairs():
    data = coded_data()
    single = per_batch(0.5)
    single.prepare(model(), data, seed=0)
    whole = list(single.batches(data, data.train.y))
    for rank in (0, 1):
        method = per_batch(0.5)
        method.prepare(model(), data, seed=0)
        method.distributed = Distributed(device=torch.device("cpu"), rank=rank, world_size=2)
        for (x, y), (x_all, y_all) in zip(method.batches(data, data.train.y), whole, strict=True):
            assert torch.equal(y, y_all[rank * 10 : (rank + 1) * 10])
            assert torch.equal(x, x_all[rank * 10 : (rank + 1) * 10])
