"""The G-term is PSD in floating point at every scale, and still the textbook Gauss-Newton matrix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepscope_goldilocks.gauss_newton import split_hessian, subspace_jacobians
from deepscope_goldilocks.hessian import FlatModel, cross_entropy, positive_curvature, random_subspace, split_batches


def scaled_relu_mlp(alpha, dtype, widths=(20, 64, 64, 10)):
    """Bias-free ReLU MLP with every weight multiplied by alpha (logits scale as alpha^3)."""
    torch.manual_seed(0)
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b, bias=False))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(alpha)
    return model


def problem(alpha, dtype, n=200, d=30):
    flat = FlatModel(scaled_relu_mlp(alpha, dtype))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 20, generator=g, dtype=dtype)
    y = torch.randint(0, 10, (n,), generator=g)
    basis = random_subspace(flat.dim, d, torch.Generator().manual_seed(1), dtype=dtype)
    return flat, x, y, basis


def difference_form(jac, probs):
    """The cancelling formula J'diag(p)J - (p'J)'(p'J), written out here as the pitfall to avoid."""
    weighted = torch.einsum("nkd,nk,nke->de", jac, probs, jac)
    pj = torch.einsum("nk,nkd->nd", probs, jac)
    g = (weighted - pj.T @ pj) / jac.shape[0]
    return (g + g.T) / 2


def rounding_floor(g, dtype):
    """How negative a PSD Gram matrix's eigenvalues may come out: tens of eps times its trace."""
    return -50 * torch.finfo(dtype).eps * torch.trace(g).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("alpha", [0.01, 1.0, 30.0, 1000.0])
def test_g_term_eigenvalues_are_non_negative_to_rounding(alpha, dtype):
    flat, x, y, basis = problem(alpha, dtype)
    g = split_hessian(flat, split_batches((x, y), 64), basis)["g"]
    eig = torch.linalg.eigvalsh(g)
    assert torch.isfinite(eig).all()
    assert eig.min().item() >= rounding_floor(g, dtype)
    if eig.abs().max() > 0:  # Tr/||G||_F >= 1 for any non-zero PSD matrix
        assert positive_curvature(g) >= 1 - 1e-4


@pytest.mark.parametrize("alpha, dtype", [(30.0, torch.float32), (1000.0, torch.float32), (1000.0, torch.float64)])
def test_the_difference_form_fails_there_so_the_test_above_can_fail(alpha, dtype):
    flat, x, _, basis = problem(alpha, dtype)
    probs = flat.logits(flat.theta, x).softmax(1).detach()
    old = difference_form(subspace_jacobians(flat, flat.theta, x, basis), probs)
    assert torch.linalg.eigvalsh(old).min().item() < rounding_floor(old, dtype)


@pytest.mark.parametrize("alpha", [0.3, 1.0, 3.0])
def test_gram_form_equals_the_textbook_form_and_completes_the_hessian(alpha):
    # a well-conditioned tiny case in float64 with explicit per-example Jacobians (d = D)
    flat = FlatModel(scaled_relu_mlp(alpha, torch.float64, widths=(5, 6, 4)))
    g = torch.Generator().manual_seed(2)
    x = torch.randn(30, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (30,), generator=g)
    eye = torch.eye(flat.dim, dtype=torch.float64)
    parts = split_hessian(flat, split_batches((x, y), 11), eye)
    jac = torch.autograd.functional.jacobian(lambda t: flat.logits(t, x), flat.theta)  # (N, K, D)
    p = flat.logits(flat.theta, x).softmax(1).detach()
    textbook = sum(j.T @ (torch.diag(q) - torch.outer(q, q)) @ j for j, q in zip(jac, p)) / x.shape[0]
    scale = textbook.abs().max().item()
    torch.testing.assert_close(parts["g"], textbook, rtol=0, atol=1e-12 * scale)
    full = torch.autograd.functional.hessian(lambda t: cross_entropy(flat.logits(t, x), y), flat.theta)
    torch.testing.assert_close(parts["g"] + parts["h_term"], full, rtol=0, atol=1e-10 * full.abs().max().item())
