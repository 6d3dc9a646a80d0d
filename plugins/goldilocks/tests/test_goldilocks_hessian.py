"""The Hessian engines against explicit autograd Hessians and closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from deepscope_goldilocks.hessian import (FlatModel, LossHessian, cross_entropy, hutchinson, lanczos_top,
                                          positive_curvature, random_subspace, spectrum_summary, split_batches)

MODES = ["forward-over-reverse", "double-backprop"]


def tiny_problem(seed=0, n=40, bias=True):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 6, bias=bias), nn.Tanh(), nn.Linear(6, 3, bias=bias)).double()
    x = torch.randn(n, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (n,))
    return FlatModel(model), x, y


def explicit_hessian(flat, x, y):
    return torch.autograd.functional.hessian(lambda t: cross_entropy(flat.logits(t, x), y), flat.theta)


@pytest.mark.parametrize("mode", MODES)
def test_hessian_products_match_autograd_hessian_for_any_batching(mode):
    flat, x, y = tiny_problem()
    full = explicit_hessian(flat, x, y)
    eye = torch.eye(flat.dim, dtype=torch.float64)
    for batch_size in (7, 40):  # unequal last batch: the example weighting must be exact
        h = LossHessian(flat, split_batches((x, y), batch_size), mode=mode, chunk_size=20).matmul(eye)
        torch.testing.assert_close(h, full, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_subspace_hessian_equals_hessian_of_restricted_loss(mode):
    flat, x, y = tiny_problem(1)
    basis = random_subspace(flat.dim, 8, torch.Generator().manual_seed(3), dtype=torch.float64)
    restricted = torch.autograd.functional.hessian(
        lambda w: cross_entropy(flat.logits(flat.theta + basis.T @ w, x), y), torch.zeros(8, dtype=torch.float64))
    sub = LossHessian(flat, split_batches((x, y), 16), mode=mode).subspace(basis)
    torch.testing.assert_close(sub, restricted, rtol=0, atol=1e-12)


def test_gradient_and_loss_match_autograd():
    flat, x, y = tiny_problem(2)
    h = LossHessian(flat, split_batches((x, y), 9))
    theta = flat.theta.clone().requires_grad_(True)
    loss = cross_entropy(flat.logits(theta, x), y)
    (g,) = torch.autograd.grad(loss, theta)
    torch.testing.assert_close(h.gradient(), g, rtol=0, atol=1e-13)
    assert h.loss() == pytest.approx(loss.item(), abs=1e-13)


def test_curvature_ratio_closed_forms():
    d = 50
    assert positive_curvature(3.7 * torch.eye(d, dtype=torch.float64)) == pytest.approx(math.sqrt(d))
    assert positive_curvature(-2 * torch.eye(d, dtype=torch.float64)) == pytest.approx(-math.sqrt(d))
    u = torch.randn(d, dtype=torch.float64)
    assert positive_curvature(torch.outer(u, u)) == pytest.approx(1.0)
    assert positive_curvature(torch.zeros(d, d)) == math.inf


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 12), st.integers(0, 10_000))
def test_curvature_ratio_lies_within_sqrt_d(d, seed):
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    s = spectrum_summary(a + a.T)
    assert abs(s["positive_curvature"]) <= math.sqrt(d) + 1e-12
    assert 0.0 <= s["frac_positive"] <= 1.0
    eig = torch.linalg.eigvalsh(a + a.T)
    assert s["positive_curvature"] == pytest.approx((eig.sum() / eig.norm()).item())


def test_random_subspace_is_sparse_unit_and_respects_support():
    gen = torch.Generator().manual_seed(0)
    dim = 10_000
    basis = random_subspace(dim, 40, gen)
    torch.testing.assert_close(basis.norm(dim=1), torch.ones(40))
    density = (basis != 0).float().mean().item()
    assert density == pytest.approx(1 / math.sqrt(dim), rel=0.1)  # 40 * 10k Bernoulli(0.01) draws
    for row in basis:  # +-1 entries before normalizing: one magnitude per row
        nonzero = row[row != 0].abs()
        torch.testing.assert_close(nonzero, torch.full_like(nonzero, 1 / math.sqrt(nonzero.numel())))
    layer = random_subspace(dim, 5, gen, support=slice(100, 200))
    assert (layer[:, :100] == 0).all() and (layer[:, 200:] == 0).all()
    gram = basis @ basis.T
    assert (gram - torch.eye(40)).abs().max() < 0.35  # approximately orthogonal, not exactly


def test_hutchinson_converges_to_exact_trace_and_frobenius_like_one_over_sqrt_probes():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(30, 30, generator=gen, dtype=torch.float64)
    m = a + a.T + torch.diag(torch.linspace(-2, 5, 30, dtype=torch.float64))
    true_tr, true_fro = torch.trace(m).item(), m.norm().item()
    errors = {}
    for probes in (100, 10_000):
        runs = [hutchinson(lambda v: v @ m, 30, probes, torch.Generator().manual_seed(s), torch.float64, chunk=500)
                for s in range(20)]
        tr_err = math.sqrt(sum((r["trace"] - true_tr) ** 2 for r in runs) / len(runs))
        fro_err = math.sqrt(sum((r["frobenius"] - true_fro) ** 2 for r in runs) / len(runs))
        se = sum(r["trace_stderr"] for r in runs) / len(runs)
        assert tr_err == pytest.approx(se, rel=0.5)  # the reported stderr is the actual spread
        errors[probes] = (tr_err, fro_err)
    # 100x more probes -> about 10x smaller errors
    assert 5 < errors[100][0] / errors[10_000][0] < 20
    assert 5 < errors[100][1] / errors[10_000][1] < 20
    assert errors[10_000][0] < 0.05 * abs(true_tr) + 0.5


def test_lanczos_returns_most_positive_eigenvalue_not_largest_magnitude():
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(60, 60, generator=gen, dtype=torch.float64))
    eig = torch.cat([torch.tensor([-10.0, 3.0], dtype=torch.float64), torch.linspace(-1, 1, 58, dtype=torch.float64)])
    m = q @ torch.diag(eig) @ q.T
    top = lanczos_top(lambda v: v @ m, 60, 30, torch.Generator().manual_seed(1), torch.float64)
    assert top == pytest.approx(3.0, abs=1e-8)


def test_lanczos_on_a_network_hessian_matches_eigvalsh():
    flat, x, y = tiny_problem(4)
    full = explicit_hessian(flat, x, y)
    h = LossHessian(flat, [(x, y)])
    top = lanczos_top(h.matmul, flat.dim, flat.dim, torch.Generator().manual_seed(0), torch.float64)
    assert top == pytest.approx(torch.linalg.eigvalsh(full).max().item(), rel=1e-9)


def test_rademacher_vectors_are_fair_independent_signs_and_reproducible():
    from deepscope_goldilocks.hessian import rademacher

    v = rademacher(400, 1003, torch.Generator().manual_seed(0), torch.float64)  # 1003: not a multiple of 8
    assert v.shape == (400, 1003)
    assert set(v.unique().tolist()) == {-1.0, 1.0}
    assert abs(v.mean().item()) < 4 / math.sqrt(v.numel())
    # neighbouring entries come from the same random byte: they must still be uncorrelated
    corr = (v[:, :-1] * v[:, 1:]).mean().item()
    assert abs(corr) < 4 / math.sqrt(v[:, 1:].numel())
    gram = v @ v.T / 1003  # E[v v'] = I across probes
    off = gram[~torch.eye(400, dtype=torch.bool)]
    assert off.abs().max() < 6 / math.sqrt(1003)
    torch.testing.assert_close(rademacher(3, 17, torch.Generator().manual_seed(5), torch.float32),
                               rademacher(3, 17, torch.Generator().manual_seed(5), torch.float32))


def test_forward_over_reverse_products_raise_no_warning_a_user_cannot_act_on():
    """torch scripts its forward-AD decompositions on first use, warning about jit.script: filtered at our call."""
    import subprocess
    import sys

    code = ("import torch; from torch import nn; from deepscope_goldilocks.hessian import FlatModel, LossHessian; "
            "x, y = torch.rand(6, 4), torch.tensor([0, 1, 0, 1, 0, 1]); flat = FlatModel(nn.Linear(4, 2)); "
            "LossHessian(flat, [(x, y)], mode='forward-over-reverse').matmul(torch.eye(flat.dim)[:3])")
    proc = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
