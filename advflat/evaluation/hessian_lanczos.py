"""Spectral estimates of a symmetric operator given only matrix-vector products.

``lanczos``: the Ritz values of an m-step Lanczos run with full reorthogonalisation (Paige's
classic loss of orthogonality would otherwise produce spurious copies of converged
eigenvalues); extremal eigenvalues at BOTH ends converge first, so one run gives the top-k and
the bottom-k. ``hutchinson_trace``: tr(A) ≈ mean zᵀAz over Rademacher probes z.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

MatVec = Callable[[Tensor], Tensor]  # flat (d,) -> (d,)


def _orthogonalize(w: Tensor, basis: Tensor) -> Tensor:
    # Classical Gram-Schmidt applied twice ("twice is enough") is as stable as modified GS.
    for _ in range(2):
        w = w - basis.T @ (basis @ w)
    return w


def lanczos(
    matvec: MatVec,
    dim: int,
    steps: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Ascending Ritz values (m,), m = min(steps, dim) or fewer on an invariant subspace."""
    steps = min(steps, dim)
    basis = torch.zeros(steps, dim, dtype=dtype, device=device)  # the Lanczos vectors q_j
    q = torch.randn(dim, generator=generator, dtype=dtype).to(device)
    q = q / q.norm()
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(steps):
        basis[j] = q
        w = matvec(q)
        alpha = torch.dot(w, q).item()
        alphas.append(alpha)
        w = _orthogonalize(w, basis[: j + 1])
        beta = w.norm().item()
        scale = max(abs(a) for a in alphas) or 1.0
        if j == steps - 1 or beta <= 1e-10 * scale:
            break  # done, or the Krylov space is invariant: its Ritz values are exact
        betas.append(beta)
        q = w / beta
    m = len(alphas)
    T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    off = torch.tensor(betas[: m - 1], dtype=torch.float64)
    T += torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigvalsh(T)


def hutchinson_trace(
    matvec: MatVec,
    dim: int,
    probes: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """(trace estimate, its standard error) from ``probes`` Rademacher vectors."""
    samples = []
    for _ in range(probes):
        z = torch.randint(0, 2, (dim,), generator=generator).to(device=device, dtype=dtype)
        z = 2 * z - 1  # ±1
        samples.append(torch.dot(z, matvec(z)).item())
    values = torch.tensor(samples, dtype=torch.float64)
    stderr = values.std().item() / probes**0.5 if probes > 1 else float("nan")
    return values.mean().item(), stderr
