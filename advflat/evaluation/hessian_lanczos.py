"""Spectral estimates of a symmetric operator given only matrix-vector products.

``lanczos``: the Ritz values of an m-step Lanczos run with full reorthogonalisation (Paige's
classic loss of orthogonality would otherwise produce spurious copies of converged
eigenvalues); extremal eigenvalues at BOTH ends converge first, so one run gives the top-k and
the bottom-k. The bottom of a network's Hessian is a cluster of small negative eigenvalues that
converges far slower than the well separated top: ``lanczos_pairs`` reports each Ritz pair's
residual and can stop once both ends have converged, so a generous step budget costs only
what the spectrum needs. ``hutchinson_trace``: tr(A) ≈ mean zᵀAz over Rademacher probes z;
``block_hutchinson_trace`` hands the operator several probes at once, for operators (such as
the Hessian of a network) whose cost is shared between the vectors of one call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

MatVec = Callable[[Tensor], Tensor]  # flat (d,) -> (d,)
BlockMatVec = Callable[[Tensor], Tensor]  # rows (p, d) -> their products (p, d)


def _orthogonalize(w: Tensor, basis: Tensor) -> Tensor:
    # Classical Gram-Schmidt applied twice ("twice is enough") is as stable as modified GS.
    for _ in range(2):
        w = w - basis.T @ (basis @ w)
    return w


@dataclass(frozen=True)
class RitzPairs:
    """Ascending Ritz values (m,) and their residuals ||A y_i − θ_i y_i|| (m,), float64."""

    values: Tensor
    residuals: Tensor

    @property
    def steps(self) -> int:
        return len(self.values)


def _ritz(alphas: list[float], betas: list[float], last_beta: float) -> RitzPairs:
    """Eigenpairs of the tridiagonal T_m; the residual of Ritz pair i is β_m |s_mi| (the Lanczos
    identity A Q_m = Q_m T_m + β_m q_{m+1} e_mᵀ): no extra matrix-vector product."""
    T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    off = torch.tensor(betas, dtype=torch.float64)
    T += torch.diag(off, 1) + torch.diag(off, -1)
    values, vectors = torch.linalg.eigh(T)
    return RitzPairs(values, last_beta * vectors[-1].abs())


def _converged(ritz: RitzPairs, k: int, tolerance: float) -> bool:
    """Both ends' k pairs have residual <= tolerance · max |θ| (θ is then that close to an
    eigenvalue of A)."""
    ends = torch.cat([ritz.residuals[:k], ritz.residuals[-k:]])
    return bool((ends <= tolerance * ritz.values.abs().max()).all())


def lanczos_pairs(
    matvec: MatVec,
    dim: int,
    steps: int,
    *,
    k: int | None = None,
    tolerance: float = 0.0,
    check_every: int = 10,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> RitzPairs:
    """At most ``steps`` Lanczos steps (m <= min(steps, dim), fewer on an invariant subspace);
    with ``k`` and ``tolerance`` > 0 it stops early, every ``check_every`` steps, once the k
    smallest and k largest Ritz pairs have converged (``_converged``)."""
    steps = min(steps, dim)
    basis = torch.zeros(steps, dim, dtype=dtype, device=device)  # the Lanczos vectors q_j
    q = torch.randn(dim, generator=generator, dtype=dtype).to(device)
    q = q / q.norm()
    alphas: list[float] = []
    betas: list[float] = []
    wanted = 0 if k is None else k  # 0: no convergence check
    for j in range(steps):
        basis[j] = q
        w = matvec(q)
        alphas.append(torch.dot(w, q).item())
        w = _orthogonalize(w, basis[: j + 1])
        beta = w.norm().item()
        scale = max(abs(a) for a in alphas) or 1.0
        if j == steps - 1 or beta <= 1e-10 * scale:
            break  # done, or the Krylov space is invariant: its Ritz values are exact
        check = wanted > 0 and tolerance > 0 and j + 1 >= 2 * wanted and (j + 1) % check_every == 0
        if check and _converged(_ritz(alphas, betas, beta), wanted, tolerance):
            break
        betas.append(beta)
        q = w / beta
    return _ritz(alphas, betas, beta)


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
    return lanczos_pairs(matvec, dim, steps, dtype=dtype, device=device, generator=generator).values


def row_by_row(matvec: MatVec) -> BlockMatVec:
    """``matvec`` applied to each row of a block in turn."""

    def apply(rows: Tensor) -> Tensor:
        return torch.stack([matvec(row) for row in rows])

    return apply


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
    return block_hutchinson_trace(
        row_by_row(matvec), dim, probes, probe_batch=1, dtype=dtype, device=device,
        generator=generator,
    )  # fmt: skip


def block_hutchinson_trace(
    matvecs: BlockMatVec,
    dim: int,
    probes: int,
    *,
    probe_batch: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """``hutchinson_trace`` with ``probe_batch`` probes per call of ``matvecs`` (the last call
    takes the rest). The probes are drawn one at a time, in order, and each zᵀAz is its own dot
    product: any ``probe_batch`` gives the same probes and, for an operator that treats the
    rows of a block independently, the same estimate to the bit."""
    samples: list[float] = []
    while len(samples) < probes:
        count = min(probe_batch, probes - len(samples))
        z = torch.stack([rademacher(dim, generator=generator) for _ in range(count)])
        z = z.to(device=device, dtype=dtype)
        samples += [torch.dot(v, av).item() for v, av in zip(z, matvecs(z), strict=True)]
    values = torch.tensor(samples, dtype=torch.float64)
    stderr = values.std().item() / probes**0.5 if probes > 1 else float("nan")
    return values.mean().item(), stderr


def rademacher(dim: int, *, generator: torch.Generator | None = None) -> Tensor:
    """A (dim,) vector of independent ±1 (int64, on the CPU where ``generator`` draws)."""
    return 2 * torch.randint(0, 2, (dim,), generator=generator) - 1
