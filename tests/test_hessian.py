"""Hessian spectra and trace (docs/flatness.md#hessian-spectrum) against the exact Hessian of tiny
models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torch.func import functional_call

from advflat.attacks.pgd import PGD
from advflat.data.base import ImageData, Split
from advflat.evaluation.hessian import (
    HessianSpectrum,
    adversarial_batches,
    hessian_parameters,
    hessian_spectrum,
    hessian_vector_product,
)
from advflat.evaluation.hessian_lanczos import hutchinson_trace, lanczos
from tests.conftest import CONF, TinyNet

# The Lanczos budget and tolerance of the paper's protocol, as conf/evaluation/paper.yaml sets
# them (k = 4, at most 200 products, tolerance 1e-5).
PAPER = OmegaConf.load(CONF / "evaluation" / "paper.yaml").metrics.hessian_clean
TOLERANCE = PAPER.tolerance


class Smooth(nn.Module):
    """A tanh MLP on (B, 1, 1, 3) inputs: a dense, indefinite Hessian of 24 weights."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))


def smooth_setup(n: int = 30):
    torch.manual_seed(3)
    model = Smooth().double().eval()
    x = torch.rand(n, 1, 1, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (n,))
    return model, x, y


def exact_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(d, d) Hessian of the mean CE over the conv/linear weights (biases held fixed)."""
    names = [n for n, p in model.named_parameters() if n.endswith("weight")]
    params = hessian_parameters(model)
    sizes = [p.numel() for p in params]

    def loss(flat: torch.Tensor) -> torch.Tensor:
        pieces = [v.view(p.shape) for v, p in zip(flat.split(sizes), params, strict=True)]
        return F.cross_entropy(functional_call(model, dict(zip(names, pieces, strict=True)), x), y)

    flat = torch.cat([p.detach().reshape(-1) for p in params])
    return torch.autograd.functional.hessian(loss, flat, vectorize=True)


@pytest.fixture(scope="module")
def digits_mlp():
    """A ReLU MLP (888 weights) briefly trained on digits, in float64, and 200 held-out digits:
    its Hessian has a cluster of small negative eigenvalues at the bottom, like real networks'."""
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float64).div(16).unsqueeze(1)
    y = torch.tensor(data.target)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 10)).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(60):
        optimizer.zero_grad()
        F.cross_entropy(model(x[:600]), y[:600]).backward()
        optimizer.step()
    model.eval()
    x, y = x[-200:], y[-200:]
    return model, x, y, torch.linalg.eigvalsh(exact_hessian(model, x, y))


def test_hessian_vector_product_equals_the_exact_hessian_times_v():
    model, x, y = smooth_setup()
    H = exact_hessian(model, x, y)
    v = torch.randn(H.shape[0], dtype=torch.float64)
    params = hessian_parameters(model)
    sizes = [q.numel() for q in params]
    pieces = [p.view(q.shape) for p, q in zip(v.split(sizes), params, strict=True)]
    hv = hessian_vector_product(model, params, list(Split(x, y).batches(7)), pieces)
    torch.testing.assert_close(torch.cat([h.reshape(-1) for h in hv]), H @ v)


def test_lanczos_eigenvalues_at_both_ends_equal_the_exact_hessians():
    model, x, y = smooth_setup()
    exact = torch.linalg.eigvalsh(exact_hessian(model, x, y))  # ascending
    assert exact[0] < 0 < exact[-1]  # indefinite: both ends carry information
    spectrum = hessian_spectrum(
        model, list(Split(x, y).batches(8)), k=3, lanczos_steps=24, tolerance=TOLERANCE, probes=0
    )
    top = torch.tensor(spectrum["top"], dtype=torch.float64)
    bottom = torch.tensor(spectrum["bottom"], dtype=torch.float64)
    torch.testing.assert_close(top, exact.flip(0)[:3], rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(bottom, exact[:3], rtol=1e-8, atol=1e-10)


def test_lanczos_converges_to_the_extremes_of_a_known_spectrum_first():
    diagonal = torch.cat(
        [torch.tensor([-5.0, -3.0]), torch.linspace(0, 1, 196), torch.tensor([4.0, 6.0])]
    ).double()
    ritz = lanczos(lambda v: diagonal * v, 200, 30, dtype=torch.float64)
    torch.testing.assert_close(ritz[:2], torch.tensor([-5.0, -3.0], dtype=torch.float64))
    torch.testing.assert_close(ritz[-2:], torch.tensor([4.0, 6.0], dtype=torch.float64))


def test_lanczos_stops_cleanly_on_an_invariant_subspace():
    # Three distinct eigenvalues: the Krylov space has dimension 3, the Ritz values are exact.
    diagonal = torch.tensor([1.0, 2.0, 7.0]).repeat_interleave(10).double()
    ritz = lanczos(lambda v: diagonal * v, 30, 20, dtype=torch.float64)
    torch.testing.assert_close(ritz, torch.tensor([1.0, 2.0, 7.0], dtype=torch.float64))


def test_hutchinson_trace_matches_the_exact_trace_within_its_monte_carlo_error():
    model, x, y = smooth_setup()
    H = exact_hessian(model, x, y)
    probes = 3000
    trace, stderr = hutchinson_trace(lambda v: H @ v, H.shape[0], probes, dtype=torch.float64)
    # Var(zᵀHz) = 2·Σ_{i≠j} H_ij² for Rademacher z.
    sigma = (2 * (H.square().sum() - H.diagonal().square().sum()) / probes).sqrt().item()
    assert abs(trace - H.trace().item()) < 5 * sigma
    assert stderr == pytest.approx(sigma, rel=0.2)


def test_paper_budget_resolves_four_eigenvalues_at_both_ends_of_a_trained_network(digits_mlp):
    model, x, y, exact = digits_mlp
    batches = list(Split(x, y).batches(100))
    spectrum = hessian_spectrum(
        model, batches, k=PAPER.k, lanczos_steps=PAPER.lanczos_steps, tolerance=TOLERANCE, probes=0
    )
    assert PAPER.k == 4
    top = torch.tensor(spectrum["top"], dtype=torch.float64)
    bottom = torch.tensor(spectrum["bottom"], dtype=torch.float64)
    torch.testing.assert_close(top, exact.flip(0)[:4], rtol=1e-6, atol=0.0)
    torch.testing.assert_close(bottom, exact[:4], rtol=1e-6, atol=0.0)
    assert spectrum["steps"] < 200  # stopped on convergence, before the budget ran out
    # The former budget (30 steps) left the 3rd/4th smallest eigenvalue percents off.
    old = hessian_spectrum(model, batches, k=4, lanczos_steps=30, tolerance=0.0, probes=0)
    assert (torch.tensor(old["bottom"][2:]) - exact[2:4]).abs().max() > 0.01 * exact[
        2:4
    ].abs().min()


def test_residuals_bound_the_distance_to_the_exact_spectrum_and_flag_an_unconverged_end(
    digits_mlp,
):
    model, x, y, exact = digits_mlp
    spectrum = hessian_spectrum(
        model, list(Split(x, y).batches(100)), k=4, lanczos_steps=30, tolerance=0.0, probes=0
    )
    ritz = spectrum["top"] + spectrum["bottom"]
    residuals = spectrum["residual_top"] + spectrum["residual_bottom"]
    for value, residual in zip(ritz, residuals, strict=True):
        # Bauer-Fike for a symmetric H: some eigenvalue lies within the residual of each value.
        assert (exact - value).abs().min().item() <= residual + 1e-12
    scale = exact.abs().max().item()
    assert max(spectrum["residual_top"]) < 1e-8 * scale  # the separated top has converged
    assert max(spectrum["residual_bottom"][2:]) > 1e-4 * scale  # the bottom cluster has not


def test_hessian_does_not_depend_on_the_batch_size():
    model, x, y = smooth_setup()
    v = [torch.randn_like(p) for p in hessian_parameters(model)]
    params = hessian_parameters(model)
    one = hessian_vector_product(model, params, [(x, y)], v)
    many = hessian_vector_product(model, params, list(Split(x, y).batches(4)), v)
    for a, b in zip(one, many, strict=True):
        torch.testing.assert_close(a, b)


def test_hessian_covers_only_conv_and_linear_weights():
    model = TinyNet()  # Linear, BatchNorm1d, Linear: BN parameters and biases stay out
    chosen = [id(p) for p in hessian_parameters(model)]
    assert chosen == [id(model.body[1].weight), id(model.head.weight)]


def smooth_data(x: torch.Tensor, y: torch.Tensor) -> ImageData:
    return ImageData(Split(x, y), Split(x, y), num_classes=3)


def test_metric_reports_both_ends_and_the_trace(tiny_data):
    metric = HessianSpectrum(
        k=2, lanczos_steps=10, tolerance=TOLERANCE, probes=4, last=20, batch_size=8
    )
    metrics = metric(TinyNet().eval(), tiny_data, {})
    expected = {f"hessian/clean/{e}_{i}" for e in ("top", "bottom") for i in (1, 2)}
    expected |= {f"hessian/clean/residual/{e}_{i}" for e in ("top", "bottom") for i in (1, 2)}
    expected |= {"hessian/clean/residual_max", "hessian/clean/lanczos_steps"}
    assert set(metrics) == expected | {"hessian/clean/trace", "hessian/clean/trace_stderr"}
    residuals = [metrics[k] for k in expected if "/residual/" in k]
    assert metrics["hessian/clean/residual_max"] == max(residuals)
    assert metrics["hessian/clean/top_1"] >= metrics["hessian/clean/top_2"]
    assert metrics["hessian/clean/bottom_1"] <= metrics["hessian/clean/bottom_2"]
    assert all(type(v) is float for v in metrics.values())


def test_robust_hessian_is_the_exact_hessian_at_the_fixed_adversarial_examples():
    model, x, y = smooth_setup()
    attack = PGD(epsilon=0.1, step_size=0.05, steps=3, restarts=1)
    metric = HessianSpectrum(
        loss="robust", k=1, lanczos_steps=24, tolerance=TOLERANCE, probes=0, attack=attack,
        last=None,
    )  # fmt: skip
    torch.manual_seed(7)
    metrics = metric(model, smooth_data(x, y), {})
    torch.manual_seed(7)
    ((x_adv, _),) = adversarial_batches(model, [(x, y)], attack)
    exact = torch.linalg.eigvalsh(exact_hessian(model, x_adv, y))
    assert metrics["hessian/robust/top_1"] == pytest.approx(exact[-1].item(), rel=1e-8)
    assert metrics["hessian/robust/bottom_1"] == pytest.approx(exact[0].item(), rel=1e-8)
    clean = torch.linalg.eigvalsh(exact_hessian(model, x, y))
    assert metrics["hessian/robust/top_1"] != pytest.approx(clean[-1].item(), rel=1e-3)


def test_hessian_leaves_the_model_untouched():
    model, x, y = smooth_setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hessian_spectrum(model, [(x, y)], k=1, lanczos_steps=5, tolerance=TOLERANCE, probes=2)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k must be >= 1"),
        ({"k": 4, "lanczos_steps": 3}, "lanczos_steps must be >= 4"),
        ({"probes": -1}, "probes must be >= 0"),
        ({"tolerance": -1e-3}, "tolerance must be >= 0"),
        ({"loss": "robust"}, "attack is required"),
        ({"last": 0}, "last must be >= 1"),
    ],
)
def test_bad_values_are_rejected(kwargs, message):
    given = {"k": 1, "lanczos_steps": 10, "tolerance": TOLERANCE, "probes": 0, "last": 20}
    with pytest.raises(ValueError, match=f"^{message}"):
        HessianSpectrum(**{**given, **kwargs})


def small_cnn_setup():
    """A float32 LeNet on 20 random 8×8 images in two batches: the metric's own kind of model."""
    from advflat.models import LeNet

    torch.manual_seed(5)
    model = LeNet(num_classes=3, input_shape=(1, 8, 8), channels=2, hidden=6).eval()
    x = torch.rand(20, 1, 8, 8)
    y = torch.randint(0, 3, (20,))
    return model, list(Split(x, y).batches(12))


def spectrum_of(model, batches, **options):
    torch.manual_seed(11)  # the Lanczos start and the trace probes
    return hessian_spectrum(
        model, batches, k=2, lanczos_steps=6, tolerance=0.0, probes=5, **options
    )


@pytest.mark.parametrize(
    "options",
    [{"probe_batch": 2}, {"probe_batch": 5}, {"probe_batch": 8}, {"reuse_graph": True}],
    ids=str,
)
def test_batched_probes_and_reused_graphs_give_the_bits_of_one_product_per_pass(options):
    model, batches = small_cnn_setup()
    assert hessian_parameters(model)[0].dtype == torch.float32
    assert spectrum_of(model, batches, **options) == spectrum_of(model, batches)


@pytest.mark.parametrize(
    ("options", "forward_passes"),
    [
        ({}, (6 + 5) * 2),  # every product: a forward and gradient pass over both batches
        ({"probe_batch": 2}, (6 + 3) * 2),  # the 5 probes in 3 passes (2, 2, 1)
        ({"probe_batch": 5}, (6 + 1) * 2),
        ({"reuse_graph": True}, 2),  # each batch's graph once, for all 11 products
    ],
    ids=str,
)
def test_pass_counts_of_the_hessian_products(monkeypatch, options, forward_passes):
    model, batches = small_cnn_setup()
    calls = {"forward": 0, "gradient": 0, "double_backward": 0}
    grad = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        calls["gradient" if kwargs.get("create_graph") else "double_backward"] += 1
        return grad(*args, **kwargs)

    def count_forward(module, inputs):
        calls["forward"] += 1

    model.register_forward_pre_hook(count_forward)
    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    spectrum = spectrum_of(model, batches, **options)
    assert spectrum["steps"] == 6  # tolerance 0: the whole budget
    assert calls == {
        "forward": forward_passes,
        "gradient": forward_passes,
        "double_backward": (6 + 5) * 2,  # one per product and batch, however they are grouped
    }


@pytest.mark.parametrize("probe_batch", [1, 3, 7, 50])
def test_block_hutchinson_trace_gives_the_bits_of_one_probe_at_a_time(probe_batch):
    from advflat.evaluation.hessian_lanczos import block_hutchinson_trace

    diagonal = torch.randn(40, generator=torch.Generator().manual_seed(1))

    def rows_times_diagonal(rows: torch.Tensor) -> torch.Tensor:
        return rows * diagonal  # elementwise: exactly each row's own product

    block = block_hutchinson_trace(
        rows_times_diagonal, 40, 17, probe_batch=probe_batch,
        generator=torch.Generator().manual_seed(2),
    )  # fmt: skip
    one = hutchinson_trace(
        lambda v: diagonal * v, 40, 17, generator=torch.Generator().manual_seed(2)
    )
    assert block == one
    assert one[0] == pytest.approx(diagonal.sum().item(), abs=1e-5)  # z_i² = 1: exact here


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"probe_batch": 0}, "probe_batch must be >= 1"),
        ({"probe_batch": 2.0}, "probe_batch must be an integer"),
        ({"reuse_graph": 1}, "reuse_graph must be true or false"),
    ],
)
def test_bad_cost_options_are_rejected_at_build_time(kwargs, message):
    given = {"k": 1, "lanczos_steps": 10, "tolerance": TOLERANCE, "probes": 2, "last": 20}
    with pytest.raises(ValueError, match=f"^{message}"):
        HessianSpectrum(**given, **kwargs)
