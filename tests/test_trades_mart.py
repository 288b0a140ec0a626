"""TRADES and MART: their loss terms against hand-computed values on tiny inputs."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advflat.attacks.base import Attack
from advflat.training.losses.mart import margin_term, weighted_kl
from advflat.training.losses.trades import kl_divergence, kl_objective
from tests.setups import loss_of, mart_loss, trades_loss, trainer


def logits_of(*rows: list[float]) -> torch.Tensor:
    """Logits whose softmax is exactly the given probability rows."""
    return torch.tensor(rows, dtype=torch.float64).log()


def inputs_of(*rows: list[float]) -> torch.Tensor:
    """Images in [0, 1] that ``Identity`` maps to ``logits_of(*rows)``."""
    return (logits_of(*rows) + 2.0) / 4.0


class Identity(nn.Module):
    """logits = 4·x − 2: the inputs encode the logits, so losses are known in closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones((), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (4.0 * x.flatten(1) - 2.0)


class FixedAttack(Attack):
    """Returns preset adversarial inputs and records how it was called."""

    def __init__(self, x_adv: torch.Tensor) -> None:
        self.x_adv = x_adv
        self.calls: list[tuple[bool, torch.Tensor, object]] = []

    def perturb(self, model, x, y, objective):
        self.calls.append((model.training, y, objective))
        return self.x_adv


def method(loss, x_adv, **kwargs):
    return trainer(loss, attack=FixedAttack(x_adv), **kwargs)


# p = (1/4, 3/4) on the clean input, q = (1/2, 1/2) on the adversarial one, y = 1.
CLEAN, ADVERSARIAL, Y = [[0.25, 0.75]], [[0.5, 0.5]], torch.tensor([1])
KL = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)


def test_trades_kl_term_matches_the_hand_computed_value():
    kl = kl_divergence(logits_of(*CLEAN), logits_of(*ADVERSARIAL))
    assert kl.item() == pytest.approx(KL, rel=1e-12)
    probabilities = torch.tensor(CLEAN, dtype=torch.float64)
    assert kl_objective(logits_of(*ADVERSARIAL), probabilities).item() == pytest.approx(KL)


def test_trades_loss_is_clean_ce_plus_beta_kl_and_reports_both_parts():
    x = inputs_of(*CLEAN).view(1, 1, 1, 2)
    trades = method(trades_loss(beta=3.0), inputs_of(*ADVERSARIAL).view(1, 1, 1, 2))
    loss, stats = loss_of(trades, Identity(), x, Y)
    ce = -math.log(0.75)
    assert stats["clean_loss"].item() == pytest.approx(ce)
    assert stats["kl"].item() == pytest.approx(KL)
    assert loss.item() == pytest.approx(ce + 3.0 * KL)
    assert stats["robust_loss"].item() == pytest.approx(-math.log(0.5))


def test_trades_attack_maximises_kl_to_clean_probabilities_from_eval_mode():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3))
    x, y = torch.rand(6, 1, 2, 2), torch.randint(0, 3, (6,))
    trades = method(trades_loss(), x + 0.01)
    with torch.no_grad():
        expected = F.softmax(model.eval()(x), dim=1)  # before the train forward moves BN stats
    model.train()
    loss_of(trades, model, x, y)
    training, target, objective = trades.attack.calls[0]
    assert not training and objective is kl_objective
    torch.testing.assert_close(target, expected)


def test_mart_margin_term_is_minus_log_one_minus_the_top_wrong_probability():
    logits = logits_of([0.2, 0.5, 0.3], [0.2, 0.5, 0.3], [0.7, 0.1, 0.2])
    margin = margin_term(logits, torch.tensor([2, 1, 0]))
    expected = [-math.log(1 - 0.5), -math.log(1 - 0.3), -math.log(1 - 0.2)]
    torch.testing.assert_close(margin, torch.tensor(expected, dtype=torch.float64))


def test_mart_weighted_kl_matches_the_hand_computed_value():
    clean, adversarial = logits_of([0.5, 0.25, 0.25]), logits_of([0.2, 0.5, 0.3])
    kl = 0.5 * math.log(0.5 / 0.2) + 0.25 * math.log(0.25 / 0.5) + 0.25 * math.log(0.25 / 0.3)
    for y, p_true in [(0, 0.5), (1, 0.25)]:
        value = weighted_kl(clean, adversarial, torch.tensor([y]))
        assert value.item() == pytest.approx(kl * (1 - p_true), rel=1e-12)


def test_mart_loss_is_adversarial_ce_plus_margin_plus_beta_weighted_kl():
    clean, adversarial = [[0.5, 0.25, 0.25]], [[0.2, 0.5, 0.3]]
    mart = method(mart_loss(beta=6.0), inputs_of(*adversarial).view(1, 1, 1, 3))
    loss, stats = loss_of(mart, Identity(), inputs_of(*clean).view(1, 1, 1, 3), torch.tensor([0]))
    kl = 0.5 * math.log(0.5 / 0.2) + 0.25 * math.log(0.25 / 0.5) + 0.25 * math.log(0.25 / 0.3)
    ce, margin, weighted = -math.log(0.2), -math.log(1 - 0.5), kl * (1 - 0.5)
    assert stats["robust_loss"].item() == pytest.approx(ce)
    assert stats["margin"].item() == pytest.approx(margin)
    assert stats["weighted_kl"].item() == pytest.approx(weighted)
    assert loss.item() == pytest.approx(ce + margin + 6.0 * weighted)


def test_mart_attacks_the_true_label_with_cross_entropy_in_eval_mode():
    mart = method(mart_loss(), torch.zeros(2, 1, 1, 3))
    y = torch.tensor([2, 0])
    loss_of(mart, Identity(), torch.zeros(2, 1, 1, 3), y)
    training, target, objective = mart.attack.calls[0]
    assert not training and torch.equal(target, y)
    assert objective.__name__ == "cross_entropy"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: trades_loss(beta=-1.0), r"^beta must be >= 0, got -1.0"),
        (lambda: mart_loss(beta=-0.5), r"^beta must be >= 0"),
        (lambda: method(trades_loss(), torch.zeros(1), weight_clipping=0.0), r"^weight_clipping"),
    ],
)
def test_bad_trades_and_mart_options_are_rejected(build, message):
    with pytest.raises(ValueError, match=message):
        build()
