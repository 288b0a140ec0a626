"""AutoAttack and its components: APGD's schedule, DLR losses, FAB's projection, Square's budget,
the ensemble's worst case, resuming from the state file, strength on a trained digits model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advflat.attacks.apgd import APGD, APGDTargeted, apgd_checkpoints
from advflat.attacks.apgd_ascent import APGDRun, halve_stalled
from advflat.attacks.autoattack import AutoAttack
from advflat.attacks.autoattack_checks import AutoAttackSanityWarning
from advflat.attacks.autoattack_common import target_classes
from advflat.attacks.dlr import dlr_loss, targeted_dlr_loss
from advflat.attacks.fab import FAB, FABTargeted
from advflat.attacks.fab_projection import project_onto_hyperplane_in_box
from advflat.attacks.norms import NORMS
from advflat.attacks.pgd import PGD
from advflat.attacks.square import Square
from advflat.attacks.square_search import square_fraction
from advflat.data.base import ImageData, Split
from advflat.evaluation.autoattack_metric import AutoAttackRobustness


# ---- a normally trained digits model (module scope: trained once, in well under a second) -------
@pytest.fixture(scope="module")
def all_digits() -> tuple[nn.Module, Tensor, Tensor]:
    """An MLP trained on scikit-learn's digits (~90 % test accuracy) and the 297 test digits."""
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).div(16).unsqueeze(1)  # (N, 1, 8, 8)
    y = torch.tensor(data.target)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        optimizer.zero_grad()
        F.cross_entropy(model(x[:1500]), y[:1500]).backward()
        optimizer.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, x[1500:], y[1500:]


@pytest.fixture(scope="module")
def digits(all_digits) -> tuple[nn.Module, Tensor, Tensor]:
    """The same model and the first 100 test digits (most tests need no more)."""
    model, x, y = all_digits
    return model, x[:100], y[:100]


def error(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) != y).double().mean().item()


def broken_count(model: nn.Module, x: Tensor, y: Tensor) -> int:
    with torch.no_grad():
        return int((model(x).argmax(1) != y).sum())


def distance(x_adv: Tensor, x: Tensor, norm: str) -> Tensor:
    return NORMS[norm](x_adv - x)


def small_components(epsilon: float, norm: str = "linf") -> list:
    """The standard ensemble with budgets cut down to keep tests fast."""
    common = {"epsilon": epsilon, "norm": norm, "restarts": 1}
    return [
        APGD(**common, steps=10),
        APGDTargeted(**common, steps=10, n_target_classes=3),
        FABTargeted(**common, steps=10, n_target_classes=3),
        Square(**common, queries=60),
    ]


class Counting(nn.Module):
    """Counts forward calls; raises after ``limit`` of them (an interrupted evaluation)."""

    def __init__(self, model: nn.Module, limit: int | None = None) -> None:
        super().__init__()
        self.model, self.limit, self.calls = model, limit, 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        if self.limit is not None and self.calls > self.limit:
            raise KeyboardInterrupt("simulated interruption")
        return self.model(x)


# ---- APGD's step-size schedule ------------------------------------------------------------------
def test_apgd_checkpoints_follow_the_published_rule():
    # p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (then 1.05 > 1): w_j = ceil(p_j N)
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(1000) == [220, 410, 570, 700, 800, 870, 930, 990]
    assert apgd_checkpoints(10) == [3, 5, 6, 7, 8, 9]  # ceil, deduplicated, inside the run
    assert apgd_checkpoints(1) == []


def test_apgd_checkpoint_halves_and_resets_exactly_the_stalled_examples():
    # Interval of 10 steps, ρ = 0.75: fewer than 7.5 increases is condition 1; η and f_max both
    # unchanged since the last checkpoint is condition 2.
    def column(values) -> Tensor:
        return torch.tensor(values, dtype=torch.float32)

    current, previous, best = torch.zeros(4, 1), torch.ones(4, 1), torch.full((4, 1), 5.0)
    run = APGDRun(
        index=torch.arange(4), group=torch.arange(4), x=torch.zeros(4, 1),
            y=torch.zeros(4), target=torch.zeros(4),
        current=current, previous=previous, loss=column([1, 1, 1, 1]),
        grad=torch.zeros(4, 1), eta=column([0.1, 0.1, 0.1, 0.1]),
        best=best, best_loss=column([2, 2, 2, 3]), best_grad=torch.full((4, 1), 7.0),
        increases=column([10, 5, 10, 10]),
        eta_checkpoint=column([0.2, 0.2, 0.1, 0.1]), best_loss_checkpoint=column([1, 1, 2, 2]),
    )  # fmt: skip
    halve_stalled(run, 0.75 * 10)
    stalled = torch.tensor([False, True, True, False])  # row 1: condition 1, row 2: condition 2
    torch.testing.assert_close(run.eta, torch.where(stalled, 0.05, 0.1))
    expected_current = torch.where(stalled[:, None], best, current)
    torch.testing.assert_close(run.current, expected_current)
    torch.testing.assert_close(run.previous, torch.where(stalled[:, None], best, previous))
    torch.testing.assert_close(run.grad, torch.where(stalled[:, None], 7.0, 0.0))
    torch.testing.assert_close(run.loss, torch.where(stalled, run.best_loss, 1.0))
    torch.testing.assert_close(run.eta_checkpoint, column([0.1] * 4))  # η before this halving
    torch.testing.assert_close(run.best_loss_checkpoint, column([2, 2, 2, 3]))
    assert run.increases.sum() == 0


def test_apgd_reaches_the_closed_form_optimum_of_a_linear_model():
    # CE of a 2-class linear model grows along w_other − w_y: the L∞ optimum is x + ε·sign(·).
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    x = 0.4 + 0.2 * torch.rand(6, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)  # correctly classified, and ε below keeps it so
        margin = (model(x) @ torch.tensor([1.0, -1.0])).abs()
        W = model[1].weight
        epsilon = 0.5 * margin.min().item() / (W[0] - W[1]).abs().sum().item()
    attack = APGD(epsilon=epsilon, steps=5, restarts=1)
    x_adv = attack(model, x, y)
    expected = x + epsilon * (W[1 - y] - W[y]).sign().view(-1, 1, 4, 4)
    torch.testing.assert_close(x_adv, expected)


def test_apgd_is_at_least_as_strong_as_pgd_with_the_same_budget(all_digits):
    # On this nearly linear model both reach about the same robust error; random starts and
    # CE-maximising iterates that stop short of the boundary move a few examples either way
    # (at most 3 of 297 over seeds 0-7), hence 2 % slack.
    model, x, y = all_digits
    for norm, epsilon in [("linf", 0.05), ("linf", 0.1), ("l2", 0.5)]:
        pgd = PGD(epsilon=epsilon, step_size=epsilon / 4, steps=20, norm=norm, restarts=1)
        apgd = APGD(epsilon=epsilon, steps=20, norm=norm, restarts=1)
        pgd_broken = broken_count(model, pgd(model, x, y), y)
        assert broken_count(model, apgd(model, x, y), y) >= pgd_broken - 0.02 * len(x)
        assert pgd_broken > broken_count(model, x, y) + 0.1 * len(x)  # the attack matters


# ---- losses -------------------------------------------------------------------------------------
def test_dlr_losses_match_hand_computed_values():
    logits = torch.tensor([[4.0, 1.0, 3.0, 2.0]] * 3)  # sorted: 4, 3, 2, 1
    # −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3): y=0: −(4−3)/2; y=2: −(3−4)/2; y=1: −(1−4)/2
    torch.testing.assert_close(
        dlr_loss(logits, torch.tensor([0, 2, 1])), torch.tensor([-0.5, 0.5, 1.5])
    )
    # −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2), denominator 4 − 1.5 = 2.5
    pairs = torch.tensor([[0, 1], [0, 2], [3, 0]])
    torch.testing.assert_close(targeted_dlr_loss(logits, pairs), torch.tensor([-1.2, -0.4, 0.8]))


def test_dlr_losses_ignore_shift_and_scale_of_the_logits():
    logits, y = torch.randn(5, 10), torch.randint(0, 10, (5,))
    pairs = torch.stack([y, (y + 1) % 10], dim=1)
    torch.testing.assert_close(dlr_loss(3 * logits + 7, y), dlr_loss(logits, y))
    torch.testing.assert_close(
        targeted_dlr_loss(3 * logits + 7, pairs), targeted_dlr_loss(logits, pairs)
    )


def test_targets_are_the_highest_other_logits():
    logits = torch.tensor([[0.0, 5.0, 3.0, 4.0, 1.0], [9.0, 1.0, 2.0, 0.0, 3.0]])
    targets = target_classes(logits, torch.tensor([1, 2]), 3)
    assert targets.tolist() == [[3, 2, 4], [0, 4, 1]]  # the label is never a target
    assert target_classes(logits, torch.tensor([1, 2]), None).shape == (2, 4)


# ---- FAB ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_hyperplane_projection_matches_closed_form_away_from_the_box(norm):
    # Without active box constraints: δ = c·w/||w||² (L2), δ = c·sign(w)/||w||₁ (L∞).
    point = torch.full((3, 1, 4, 4), 0.5)
    w, c = torch.randn(3, 1, 4, 4), torch.tensor([0.05, -0.02, 0.0])
    delta = project_onto_hyperplane_in_box(point, w, c, norm)
    flat = w.flatten(1)
    if norm == "l2":
        expected = (c / flat.pow(2).sum(1)).view(-1, 1, 1, 1) * w
    else:
        expected = (c / flat.abs().sum(1)).view(-1, 1, 1, 1) * w.sign()
    torch.testing.assert_close(delta, expected)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_hyperplane_projection_stays_in_the_box_and_on_the_plane(norm):
    point = torch.rand(64, 1, 4, 4)
    w, c = torch.randn(64, 1, 4, 4), 2.0 * torch.randn(64)
    delta = project_onto_hyperplane_in_box(point, w, c, norm)
    moved = point + delta
    assert moved.min() >= 0 and moved.max() <= 1 + 1e-6
    towards = w * c.sign().view(-1, 1, 1, 1)  # the direction that moves w·δ towards c
    reach = torch.where(towards > 0, 1 - point, point).mul(w.abs()).flatten(1).sum(1)  # max
    feasible = reach >= c.abs()
    gain = (w * delta).flatten(1).sum(1)
    torch.testing.assert_close(gain[feasible], c[feasible], atol=1e-4, rtol=1e-4)
    # out of reach: every coordinate goes to the wall in the right direction
    torch.testing.assert_close(gain[~feasible].abs(), reach[~feasible], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("norm", "epsilon"), [("linf", 0.05), ("linf", 0.1), ("l2", 0.5)])
@pytest.mark.parametrize("cls", [FAB, FABTargeted])
def test_fab_successes_lie_within_epsilon_and_failures_return_x(digits, cls, norm, epsilon):
    model, x, y = digits
    targets = {"n_target_classes": 9} if cls is FABTargeted else {}
    x_adv = cls(epsilon=epsilon, norm=norm, steps=20, restarts=1, **targets)(model, x, y)
    with torch.no_grad():
        broken = model(x_adv).argmax(1) != y
    assert broken.float().mean() > error(model, x, y)  # it found something
    assert (distance(x_adv[broken], x[broken], norm) <= epsilon + 1e-6).all()
    assert torch.equal(x_adv[~broken], x[~broken])
    assert x_adv.min() >= 0 and x_adv.max() <= 1


# ---- Square -------------------------------------------------------------------------------------
def test_square_schedule_halves_p_at_the_published_iterations():
    p = [square_fraction(0.8, i, 10000, rescale=True) for i in (10, 11, 50, 51, 8000, 8001)]
    assert p == [0.8, 0.4, 0.4, 0.2, 0.8 / 2**8, 0.8 / 2**9]
    assert square_fraction(0.8, 51, 5000, rescale=False) == 0.2  # AutoAttack: unstretched
    assert square_fraction(0.8, 26, 5000, rescale=True) == 0.2  # 26 of 5000 is 52 of 10000


@pytest.mark.parametrize(("norm", "epsilon"), [("linf", 0.1), ("l2", 0.5)])
@pytest.mark.parametrize("restarts", [1, 2])
def test_square_stays_in_ball_and_box_within_its_query_budget(digits, norm, epsilon, restarts):
    model, x, y = digits
    counted = Counting(model)
    x_adv = Square(epsilon=epsilon, norm=norm, queries=40, restarts=restarts)(counted, x, y)
    assert (distance(x_adv, x, norm) <= epsilon + 1e-6).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    # every call sees each example at most once: calls bound the queries of any example
    assert counted.calls <= 40 * restarts
    assert error(model, x_adv, y) > error(model, x, y)


def test_square_spends_exactly_its_budget_on_points_it_cannot_break(digits):
    model, x, y = digits
    with torch.no_grad():
        robust = model(x).argmax(1) == y
    counted = Counting(model)
    Square(epsilon=1e-6, queries=25, restarts=1)(counted, x[robust], y[robust])
    assert counted.calls == 25


# ---- strength on a normally trained model -------------------------------------------------------
@pytest.mark.parametrize(
    "attack",
    [
        APGD(epsilon=0.3, steps=10, restarts=1),
        APGD(epsilon=0.3, steps=10, loss="dlr", restarts=1),
        APGDTargeted(epsilon=0.3, steps=10, n_target_classes=2, restarts=1),
        FAB(epsilon=0.3, steps=10, restarts=1),
        FABTargeted(epsilon=0.3, steps=10, n_target_classes=2, restarts=1),
        Square(epsilon=0.3, queries=100, restarts=1),
        APGD(epsilon=2.5, norm="l2", steps=10, restarts=1),
        FABTargeted(epsilon=2.5, norm="l2", steps=10, n_target_classes=2, restarts=1),
        Square(epsilon=2.5, norm="l2", queries=100, restarts=1),
    ],
    ids=lambda a: f"{a.name}-{a.norm}",
)
def test_each_component_breaks_a_normally_trained_model_at_large_epsilon(digits, attack):
    model, x, y = digits
    assert error(model, attack(model, x, y), y) >= 0.97


# ---- the ensemble -------------------------------------------------------------------------------
def test_ensemble_is_never_weaker_than_any_of_its_components(digits):
    model, x, y = digits
    components = small_components(0.05)
    result = AutoAttack(epsilon=0.05, version="custom", attacks=components).run(model, x, y)
    assert result.robust_error == pytest.approx(error(model, result.x_adv, y))
    for attack in components:
        alone = error(model, attack(model, x, y), y)
        assert result.robust_error >= alone, attack.name
    errors = list(result.errors().values())  # clean, then cumulative after each component
    assert errors == sorted(errors) and errors[-1] == pytest.approx(result.robust_error)


def test_ensemble_output_stays_in_ball_and_box_and_keeps_robust_points(digits):
    model, x, y = digits
    attack = AutoAttack(epsilon=0.05, version="custom", attacks=small_components(0.05))
    result = attack.run(model, x, y, batch_size=32)
    assert (distance(result.x_adv, x, "linf") <= 0.05 + 1e-6).all()
    assert torch.equal(result.x_adv[result.robust], x[result.robust])
    with torch.no_grad():
        assert torch.equal(model(result.x_adv).argmax(1) == y, result.robust)


# 3 calls for the sanity checks, 7 batches of 16 for the clean check, then the components:
# interrupted in the clean check, between batches, inside APGD-CE, inside APGD-T, before FAB-T.
@pytest.mark.parametrize(("limit", "midway"), [(5, None), (15, None), (40, "apgd-ce"),
                                               (120, "apgd-t"), (300, None)])  # fmt: skip
def test_interrupted_evaluation_resumes_to_the_same_result(digits, tmp_path, limit, midway):
    model, x, y = digits
    kwargs = {"epsilon": 0.05, "version": "custom", "seed": 3}
    reference = AutoAttack(**kwargs, attacks=small_components(0.05)).run(model, x, y, 16)
    state = tmp_path / "autoattack.pt"
    attack = AutoAttack(**kwargs, attacks=small_components(0.05), state_file=str(state))
    with pytest.raises(KeyboardInterrupt):
        attack.run(Counting(model, limit=limit), x, y, 16)
    assert state.exists() == (limit > 10)  # written once the clean check is done
    if midway is not None:  # a component was interrupted between two of its batches
        saved = torch.load(state, weights_only=True)
        assert saved["component"] == midway and len(saved["pending"]) > 0
    resumed = attack.run(Counting(model), x, y, 16)
    assert torch.equal(resumed.x_adv, reference.x_adv)
    assert resumed.accuracy == reference.accuracy


def test_a_finished_state_file_is_reused_and_a_foreign_one_is_not(digits, tmp_path):
    model, x, y = digits
    state = str(tmp_path / "state.pt")
    attack = AutoAttack(
        epsilon=0.05, version="custom", attacks=small_components(0.05), state_file=state
    )
    first = attack.run(model, x, y)
    counted = Counting(model)
    again = attack.run(counted, x, y)
    assert torch.equal(again.x_adv, first.x_adv)
    # The sanity checks and the resume check's two passes (clean, adversarial): nothing is
    # attacked twice.
    assert counted.calls <= 6
    with pytest.warns(UserWarning, match="another evaluation"):
        attack.run(model, x[:50], y[:50])


def test_autoattack_leaves_the_callers_random_state_alone(digits):
    model, x, y = digits
    before = torch.get_rng_state()
    AutoAttack(epsilon=0.05, version="custom", attacks=small_components(0.05))(model, x, y)
    assert torch.equal(torch.get_rng_state(), before)


def test_standard_and_plus_versions_have_the_published_components():
    standard = AutoAttack(epsilon=8 / 255)
    assert standard.names == ["apgd-ce", "apgd-t", "fab-t", "square"]
    apgd, apgd_t, fab_t, square = (attack for _, attack in standard.components)
    assert (apgd.steps, apgd.restarts, apgd.rho, apgd.momentum) == (100, 1, 0.75, 0.75)
    assert apgd_t.n_target_classes == 9 and fab_t.n_target_classes == 9
    assert (square.queries, square.p_init) == (5000, 0.8)
    plus = AutoAttack(epsilon=0.5, norm="l2", version="plus")
    assert plus.names == ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
    assert all(attack.norm == "l2" for _, attack in plus.components)


def test_paper_version_is_the_standard_one_without_square():
    paper = AutoAttack(epsilon=8 / 255, version="paper")
    assert paper.names == ["apgd-ce", "apgd-t", "fab-t"]
    standard = AutoAttack(epsilon=8 / 255)
    for (_, ours), (_, theirs) in zip(paper.components, standard.components, strict=False):
        assert repr(ours) == repr(theirs)  # the same settings, component by component


def test_paper_evaluation_preset_runs_the_paper_version():
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["evaluation=paper"])
    assert cfg.evaluation.metrics.autoattack.attack.version == "paper"


# ---- sanity checks ------------------------------------------------------------------------------
def test_sanity_checks_warn_about_probabilities_randomness_and_zero_gradients(digits):
    model, x, y = digits
    attack = AutoAttack(
        epsilon=0.05, version="custom", attacks=[APGD(epsilon=0.05, steps=2, restarts=1)]
    )
    with pytest.warns(AutoAttackSanityWarning, match="probabilities"):
        attack.run(nn.Sequential(model, nn.Softmax(dim=1)), x[:8], y[:8])
    with pytest.warns(AutoAttackSanityWarning, match="differ"):
        attack.run(nn.Sequential(nn.Dropout(0.5), model).train(), x[:8], y[:8])

    class Quantised(nn.Module):  # rounding the input kills every input gradient
        def forward(self, inputs: Tensor) -> Tensor:
            return model(torch.round(inputs))

    with pytest.warns(AutoAttackSanityWarning, match="zero input gradient"):
        attack.run(Quantised(), x[:8], y[:8])


# ---- arguments ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: AutoAttack(epsilon=-1.0), "epsilon must be > 0"),
        (lambda: AutoAttack(epsilon=0.1, norm="l1"), "norm must be one of"),
        (lambda: AutoAttack(epsilon=0.1, version="fast"), "version must be one of"),
        (lambda: AutoAttack(epsilon=0.1, version="custom"), "attacks must be a non-empty"),
        (
            lambda: AutoAttack(epsilon=0.1, attacks=[APGD(epsilon=0.1, steps=100, restarts=1)]),
            "attacks must be null",
        ),
        (
            lambda: AutoAttack(
                epsilon=0.1, version="custom", attacks=[APGD(epsilon=0.2, steps=100, restarts=1)]
            ),
            r"attacks\[0\].epsilon must be <=",
        ),
        (lambda: APGD(epsilon=0.1, loss="mse", steps=100, restarts=1), "loss must be one of"),
        (lambda: APGD(epsilon=0.1, rho=1.5, steps=100, restarts=1), "rho must be in"),
        (
            lambda: APGDTargeted(epsilon=0.1, n_target_classes=0, steps=100, restarts=1),
            "n_target_classes must be >= 1",
        ),
        (
            lambda: FABTargeted(epsilon=0.1, eta=0.5, steps=100, n_target_classes=9, restarts=1),
            "eta must be >= 1",
        ),
        (lambda: Square(epsilon=0.1, queries=1, restarts=1), "queries must be >= 2"),
        (lambda: Square(epsilon=0.1, p_init=0.0, queries=5000, restarts=1), "p_init must be in"),
    ],
)
def test_invalid_arguments_are_rejected_with_the_parameter_name(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_components_refuse_a_foreign_objective(digits):
    model, x, y = digits
    with pytest.raises(ValueError, match="own loss"):
        APGD(epsilon=0.1, steps=100, restarts=1)(model, x, y, lambda logits, target: logits.sum(1))


# ---- the metric ---------------------------------------------------------------------------------
def test_metric_reports_overall_and_cumulative_component_errors(digits):
    model, x, y = digits
    data = ImageData(Split(x, y), Split(x, y), num_classes=10)
    attack = AutoAttack(epsilon=0.05, version="custom", attacks=small_components(0.05))
    metrics = AutoAttackRobustness(attack=attack, first=60, batch_size=25)(model, data, {})
    key = "test/robust_error/autoattack"
    assert set(metrics) == {key, *(f"{key}/{n}" for n in ["apgd-ce", "apgd-t", "fab-t", "square"])}
    assert metrics[f"{key}/square"] == metrics[key]
    assert error(model, x[:60], y[:60]) <= metrics[f"{key}/apgd-ce"] <= metrics[key] <= 1
    assert math.isclose(metrics[key] * 60, round(metrics[key] * 60))  # a count of 60 examples


def test_metric_keeps_its_progress_in_the_folder_it_is_pointed_at(digits, tmp_path):
    model, x, y = digits
    data = ImageData(Split(x, y), Split(x, y), num_classes=10)
    attack = AutoAttack(epsilon=0.05, version="custom", attacks=small_components(0.05))
    metric = AutoAttackRobustness(attack=attack, first=20, batch_size=20)
    folders = [tmp_path / "epoch_001", tmp_path / "epoch_002"]
    results = []
    for folder in folders:  # as advflat-eval does for every snapshot
        metric.output_dir = str(folder)
        results.append(metric(model, data, {}))
        saved = torch.load(folder / "autoattack_state.pt", weights_only=True)
        assert saved["finished"] == attack.names and saved["pending"] is None
        key = "test/robust_error/autoattack"
        assert 1 - saved["robust"].double().mean().item() == pytest.approx(results[-1][key])
    # Each evaluation's finished state, in its own folder and nowhere else.
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.pt")) == [
        folder.relative_to(tmp_path) / "autoattack_state.pt" for folder in folders
    ]
    # Pointed back at the first folder (the second's state gone), the metric resumes from the
    # first's: the same results from the sanity checks and the resume check's two passes, no
    # component attacks again.
    (folders[1] / "autoattack_state.pt").unlink()
    metric.output_dir = str(folders[0])
    counted = Counting(model)
    assert metric(counted, data, {}) == results[0]
    assert counted.calls <= 6
