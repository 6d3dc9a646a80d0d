"""The Gauss-Newton split of the cross-entropy Hessian, restricted to a subspace.

With logits z_n (temperature already inside the model), p_n = softmax(z_n) and
one-hot labels y_n:

    H = mean_n J_n' (diag p_n - p_n p_n') J_n  +  mean_n sum_k (p_nk - y_nk) Hess z_nk
      =            G (PSD, "G-term")           +         H-term

G comes from subspace logit Jacobians J_n P' (forward-mode, one jvp per
direction), formed as a Gram matrix (B J)'(B J) so that it is PSD in floating
point too (see ``g_term``). The H-term is computed directly as the Hessian of
``mean_n sum_k c_nk z_nk`` with c = p - y held fixed, so G + H-term = H is a
real check rather than a definition.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.func import jvp, vmap

from .hessian import Batch, FlatModel, LossHessian, cross_entropy


def subspace_jacobians(flat: FlatModel, theta: torch.Tensor, x: torch.Tensor, basis: torch.Tensor,
                       chunk_size: int | None = None) -> torch.Tensor:
    """Logit Jacobians projected on the rows of ``basis``: shape (N, K, d)."""

    def along(v):
        return jvp(lambda t: flat.logits(t, x), (theta,), (v,))[1]

    return vmap(along, chunk_size=chunk_size)(basis.to(theta)).permute(1, 2, 0)


def g_term(jac: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """mean_n J_n' (diag p_n - p_n p_n') J_n for J (N, K, d) and p (N, K), as a Gram matrix.

    diag p - p p' = B'B with B = diag(sqrt p) - sqrt(p) p' (rows of p sum to 1), and
    B J = sqrt(p) * (J - p'J): each Jacobian row minus the p-weighted mean row. The
    result mean_n (B J_n)'(B J_n) is PSD up to the rounding of one product, whereas
    the difference J'diag(p)J - (p'J)'(p'J) cancels catastrophically when p is
    nearly one-hot and can then have large negative eigenvalues.
    """
    mean_row = torch.einsum("nk,nkd->nd", probs, jac)
    factor = probs.clamp_min(0).sqrt().unsqueeze(2) * (jac - mean_row.unsqueeze(1))
    return torch.einsum("nkd,nke->de", factor, factor) / jac.shape[0]


def gamma(probs: torch.Tensor) -> float:
    """Tr(M)/||M||_F of M = mean_n (diag p_n - p_n p_n'); sqrt(K-1) for uniform p, 0 for one-hot."""
    m = torch.diag(probs.mean(0)) - probs.T @ probs / probs.shape[0]
    fro = torch.linalg.matrix_norm(m).item()
    return 0.0 if fro == 0 else torch.trace(m).item() / fro


def residual_objective(logits: torch.Tensor, coeff: torch.Tensor) -> torch.Tensor:
    """mean_n sum_k c_nk z_nk: its Hessian (c fixed) is the H-term."""
    return (coeff * logits).sum(1).mean()


def split_hessian(flat: FlatModel, batches: Sequence[Batch], basis: torch.Tensor, mode: str = "forward-over-reverse",
                  chunk_size: int | None = None) -> dict[str, torch.Tensor]:
    """Subspace matrices ``hessian``, ``g`` and ``h_term`` (each d x d) over (x, y) batches."""
    theta = flat.theta
    total = sum(b[0].shape[0] for b in batches)
    g = torch.zeros(basis.shape[0], basis.shape[0], dtype=theta.dtype, device=theta.device)
    coeff_batches = []
    for x, y in batches:
        with torch.no_grad():
            logits = flat.logits(theta, x)
            probs = logits.softmax(1)
        jac = subspace_jacobians(flat, theta, x, basis, chunk_size)
        g += g_term(jac, probs) * (x.shape[0] / total)
        onehot = torch.nn.functional.one_hot(y, logits.shape[1]).to(probs)
        coeff_batches.append((x, probs - onehot))
    g = (g + g.T) / 2
    hessian = LossHessian(flat, batches, cross_entropy, mode, chunk_size).subspace(basis)
    h_term = LossHessian(flat, coeff_batches, residual_objective, mode, chunk_size).subspace(basis)
    return {"hessian": hessian, "g": g, "h_term": h_term}
