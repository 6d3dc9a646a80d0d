"""The Hessian's eigenvalue density by stochastic Lanczos quadrature (SLQ).

For a unit start vector v, m Lanczos steps give a tridiagonal T whose
eigenvalues theta_j (Ritz values) and squared first eigenvector entries tau_j
form a Gauss quadrature: sum_j tau_j f(theta_j) = v'f(H)v exactly for every
polynomial f of degree < 2m. With v Rademacher / sqrt(D), E[v'f(H)v] =
(1/D) sum_i f(lambda_i), so averaging the quadratures of a few vectors
estimates the spectral measure (1/D) sum_i delta(lambda_i): its mass above
zero, its edges, its trace (Ghorbani et al. 2019; PyHessian's ``density``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .hessian import lanczos_tridiagonal, rademacher

MatMul = Callable[[torch.Tensor], torch.Tensor]


def slq(matmul: MatMul, dim: int, steps: int, vectors: int, generator: torch.Generator,
        dtype: torch.dtype = torch.float32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One (Ritz values, weights) pair per Rademacher start vector; the weights of each sum to 1."""
    out = []
    for v in rademacher(vectors, dim, generator, torch.float64):
        nodes, vecs = torch.linalg.eigh(lanczos_tridiagonal(matmul, v, steps, dtype))
        out.append((nodes.cpu(), vecs[0].pow(2).cpu()))
    return out


def density_on_grid(quadratures: list[tuple[torch.Tensor, torch.Tensor]], grid: torch.Tensor,
                    sigma: float) -> torch.Tensor:
    """The averaged quadratures smoothed by Gaussians of width ``sigma``: a density that integrates to ~1."""
    total = torch.zeros_like(grid, dtype=torch.float64)
    for nodes, weights in quadratures:
        z = (grid.double().unsqueeze(1) - nodes.unsqueeze(0)) / sigma
        total += (weights.unsqueeze(0) * torch.exp(-0.5 * z * z)).sum(1) / (sigma * math.sqrt(2 * math.pi))
    return total / len(quadratures)


def slq_summary(quadratures: list[tuple[torch.Tensor, torch.Tensor]], dim: int) -> dict[str, float]:
    """Mass above and below zero (mean and standard error over vectors), spectrum edges, trace."""
    pos = torch.stack([w[n > 0].sum() for n, w in quadratures]).double()
    neg = torch.stack([w[n < 0].sum() for n, w in quadratures]).double()
    trace = torch.stack([dim * (w * n).sum() for n, w in quadratures]).double()
    k = len(quadratures)
    se = (lambda t: (t.std() / math.sqrt(k)).item()) if k > 1 else (lambda t: math.nan)
    return {
        "mass_positive": pos.mean().item(), "mass_positive_stderr": se(pos),
        "mass_negative": neg.mean().item(),
        "lambda_min": min(n.min().item() for n, _ in quadratures),
        "lambda_max": max(n.max().item() for n, _ in quadratures),
        "trace_slq": trace.mean().item(), "trace_slq_stderr": se(trace),
    }


def density_grid(quadratures: list[tuple[torch.Tensor, torch.Tensor]], points: int,
                 relative_sigma: float) -> tuple[torch.Tensor, float]:
    """A grid over the Ritz values padded by 5 sigma, sigma = relative_sigma x the spectrum's width."""
    lo = min(n.min().item() for n, _ in quadratures)
    hi = max(n.max().item() for n, _ in quadratures)
    sigma = relative_sigma * max(hi - lo, 1e-12 * max(1.0, abs(hi)))
    return torch.linspace(lo - 5 * sigma, hi + 5 * sigma, points, dtype=torch.float64), sigma
