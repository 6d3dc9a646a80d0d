"""Stochastic Lanczos quadrature against a small model's exact Hessian (autograd), and PyHessian as a peer."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from deepscope import Network, RunState
from deepscope.testing import tiny_data
from deepscope_goldilocks.configs import CurvatureConfig, GaussNewtonConfig, SpectralDensityConfig
from deepscope_goldilocks.hessian import FlatModel, LossHessian, cross_entropy, rademacher, random_subspace
from deepscope_goldilocks.measure import probe_examples, probe_model
from deepscope_goldilocks.probes import CurvatureProbe, GaussNewtonProbe, SpectralDensityProbe
from deepscope_goldilocks.spectral import density_grid, density_on_grid, slq, slq_summary


def problem(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 3)).double()  # D = 70
    x = torch.randn(50, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (50,))
    flat = FlatModel(model)
    exact = torch.autograd.functional.hessian(lambda t: cross_entropy(flat.logits(t, x), y), flat.theta)
    exact = (exact + exact.T) / 2
    return flat, SimpleNamespace(matmul=lambda vectors: vectors @ exact), exact  # SLQ on the exact matrix


def test_quadrature_moments_are_exact_up_to_degree_2m_minus_1():
    flat, hessian, exact = problem()
    m = 12
    (nodes, weights), = slq(hessian.matmul, flat.dim, m, 1, torch.Generator().manual_seed(3), torch.float64)
    # the start vector, drawn as slq draws it
    v = rademacher(1, flat.dim, torch.Generator().manual_seed(3), torch.float64)[0]
    v = v / v.norm()
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-12)
    power = v.clone()
    scale = torch.linalg.matrix_norm(exact, 2).item()
    for k in range(2 * m):
        exact_moment = torch.dot(v, power).item()  # v' H^k v
        assert (weights * nodes ** k).sum().item() == pytest.approx(exact_moment, abs=1e-9 * scale ** k), k
        power = exact @ power


def test_full_lanczos_finds_exact_eigenvalues_and_the_exact_positive_mass_of_its_vector():
    flat, hessian, exact = problem(1)
    lam, vecs = torch.linalg.eigh(exact)
    (nodes, weights), = slq(hessian.matmul, flat.dim, flat.dim, 1, torch.Generator().manual_seed(4), torch.float64)
    scale = lam.abs().max().item()
    heavy = nodes[weights > 1e-8]  # Ritz values that carry weight have converged to eigenvalues
    assert all((lam - t).abs().min().item() < 1e-7 * scale for t in heavy)
    v = rademacher(1, flat.dim, torch.Generator().manual_seed(4), torch.float64)[0]
    coef = (vecs.T @ (v / v.norm())) ** 2
    assert weights[nodes > 1e-9 * scale].sum().item() == pytest.approx(coef[lam > 1e-9 * scale].sum().item(),
                                                                        abs=1e-7)


def test_averaged_quadratures_estimate_the_spectral_measure_within_their_error_bars():
    """The trace (a polynomial) is unbiased at any m; the mass above zero (a step) only once m = D."""
    flat, hessian, exact = problem(2)
    lam = torch.linalg.eigvalsh(exact)
    full = slq_summary(slq(hessian.matmul, flat.dim, flat.dim, 24, torch.Generator().manual_seed(6),
                           torch.float64), flat.dim)
    assert abs(full["mass_positive"] - (lam > 0).double().mean().item()) < 4 * full["mass_positive_stderr"]
    quads = slq(hessian.matmul, flat.dim, 30, 64, torch.Generator().manual_seed(5), torch.float64)
    s = slq_summary(quads, flat.dim)
    assert abs(s["trace_slq"] - lam.sum().item()) < 4 * s["trace_slq_stderr"]
    assert s["mass_positive"] + s["mass_negative"] == pytest.approx(1.0, abs=1e-9)
    assert lam.min().item() <= s["lambda_min"] + 1e-9 and s["lambda_max"] <= lam.max().item() + 1e-9
    assert s["lambda_max"] == pytest.approx(lam.max().item(), rel=1e-6)  # the edges converge first
    grid, sigma = density_grid(quads, 4000, 0.01)
    density = density_on_grid(quads, grid, sigma)
    assert torch.trapezoid(density, grid).item() == pytest.approx(1.0, abs=1e-6)
    mean = torch.trapezoid(density * grid, grid).item()
    assert mean == pytest.approx(s["trace_slq"] / flat.dim, rel=1e-6)


def test_pyhessian_density_agrees_on_the_positive_mass_the_trace_and_the_edge():
    """Same estimator, same steps: the two positive masses agree within error bars (both carry the same
    m < D resolution bias); both traces are unbiased. PyHessian's ``density`` calls ``torch.eig``
    (removed in torch 2): the shim below gives it eigh."""
    import copy

    from pyhessian import hessian as PyHessian

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 3))
    x, y = torch.randn(50, 6), torch.randint(0, 3, (50,))
    flat = FlatModel(model)
    double = FlatModel(copy.deepcopy(model).double())
    exact = torch.autograd.functional.hessian(lambda t: cross_entropy(double.logits(t, x.double()), y),
                                              double.theta)
    lam = torch.linalg.eigvalsh((exact + exact.T) / 2)

    def eig_shim(matrix, eigenvectors=True):
        values, vectors = torch.linalg.eigh(matrix)
        return torch.stack([values, torch.zeros_like(values)], 1), vectors

    steps, vectors = 30, 16
    torch.manual_seed(1)
    peer = PyHessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False)
    had_eig = hasattr(torch, "eig")
    original = getattr(torch, "eig", None)
    torch.eig = eig_shim
    try:
        nodes, weights = peer.density(iter=steps, n_v=vectors)
    finally:
        if had_eig:
            torch.eig = original
        else:
            del torch.eig
    nodes = [torch.tensor(n, dtype=torch.float64) for n in nodes]
    weights = [torch.tensor(w, dtype=torch.float64) for w in weights]
    peer_s = slq_summary(list(zip(nodes, weights)), flat.dim)
    ours = slq_summary(slq(LossHessian(flat, [(x, y)]).matmul, flat.dim, steps, vectors,
                           torch.Generator().manual_seed(2), torch.float32), flat.dim)
    for key in ("mass_positive", "trace_slq"):
        band = 4 * math.hypot(ours[f"{key}_stderr"], peer_s[f"{key}_stderr"])
        assert abs(ours[key] - peer_s[key]) < band, key
    assert abs(peer_s["trace_slq"] - lam.sum().item()) < 4 * peer_s["trace_slq_stderr"]
    assert abs(ours["trace_slq"] - lam.sum().item()) < 4 * ours["trace_slq_stderr"]
    assert peer_s["lambda_max"] == pytest.approx(lam.max().item(), rel=1e-3)
    assert ours["lambda_max"] == pytest.approx(lam.max().item(), rel=1e-3)


def tiny_state():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    data = tiny_data(n_train=40, shape=(1, 4, 4), classes=3)
    model = Network(body, data.info.mean, data.info.std)
    return RunState(pipeline=SimpleNamespace(run=SimpleNamespace(seed=0)), host=None, device=torch.device("cpu"),
                    data=data, model=model)


def fake_ctx():
    return SimpleNamespace(log_tensors=lambda *a, **k: None, log_figure=lambda *a, **k: None)


def brute_force_subspace_curvatures(state, d, k, seed):
    flat = FlatModel(probe_model(state, "float64"))
    x, y = probe_examples(state, "train", 40, "float64")
    exact = torch.autograd.functional.hessian(lambda t: cross_entropy(flat.logits(t, x), y), flat.theta)
    gen = torch.Generator().manual_seed(seed)
    ratios, fracs = [], []
    for _ in range(k):
        p = random_subspace(flat.dim, d, gen, dtype=torch.float64)
        sub = p @ exact @ p.T
        ratios.append((torch.trace(sub) / torch.linalg.matrix_norm(sub)).item())
        fracs.append((torch.linalg.eigvalsh((sub + sub.T) / 2) > 0).double().mean().item())
    return torch.tensor(ratios, dtype=torch.float64), torch.tensor(fracs, dtype=torch.float64)


def test_n_subspaces_logs_the_mean_and_standard_error_of_independent_subspaces():
    state = tiny_state()
    common = dict(subspace_dim=6, n_examples=40, dtype="float64", probes=0, lanczos_steps=0, subspace_seed=3)
    out = CurvatureProbe(CurvatureConfig(n_subspaces=5, **common)).measure(state, fake_ctx())
    ratios, fracs = brute_force_subspace_curvatures(state, 6, 5, 3)
    assert out["positive_curvature"] == pytest.approx(ratios.mean().item(), rel=1e-10)
    assert out["positive_curvature_stderr"] == pytest.approx(ratios.std().item() / math.sqrt(5), rel=1e-8)
    assert out["frac_positive"] == pytest.approx(fracs.mean().item(), abs=1e-12)
    assert ratios.std().item() > 0  # the subspaces do differ
    single = CurvatureProbe(CurvatureConfig(n_subspaces=1, **common)).measure(state, fake_ctx())
    assert single["positive_curvature"] == pytest.approx(ratios[0].item(), rel=1e-10)
    assert "positive_curvature_stderr" not in single

    gn = GaussNewtonProbe(GaussNewtonConfig(subspace_dim=6, n_examples=40, dtype="float64", subspace_seed=3,
                                            n_subspaces=5)).measure(state, fake_ctx())
    assert gn["hessian_positive_curvature"] == pytest.approx(ratios.mean().item(), rel=1e-8)
    assert gn["hessian_positive_curvature_stderr"] == pytest.approx(ratios.std().item() / math.sqrt(5), rel=1e-6)
    assert gn["split_residual"] < 1e-10 and gn["g_frac_positive"] >= gn["hessian_frac_positive"] - 1


def test_spectral_density_probe_equals_slq_on_the_exact_hessian_with_the_same_start_vectors():
    state = tiny_state()
    flat = FlatModel(probe_model(state, "float64"))
    x, y = probe_examples(state, "train", 40, "float64")
    exact = torch.autograd.functional.hessian(lambda t: cross_entropy(flat.logits(t, x), y), flat.theta)
    exact = (exact + exact.T) / 2
    figures, tensors = [], {}
    ctx = SimpleNamespace(log_tensors=lambda name, t: tensors.update(t),
                          log_figure=lambda fig, name: figures.append(name))
    out = SpectralDensityProbe(SpectralDensityConfig(n_examples=40, dtype="float64", lanczos_steps=15,
                                                     n_vectors=3, seed=7)).measure(state, ctx)
    reference = slq_summary(slq(lambda v: v @ exact, flat.dim, 15, 3, torch.Generator().manual_seed(7),
                                torch.float64), flat.dim)
    for key, value in reference.items():
        assert out[key] == pytest.approx(value, rel=1e-7, abs=1e-9), key
    assert out["lambda_max"] == pytest.approx(torch.linalg.eigvalsh(exact).max().item(), rel=1e-6)
    assert figures == ["spectral_density_epoch0"]
    assert torch.trapezoid(tensors["density"], tensors["grid"]).item() == pytest.approx(1.0, abs=1e-6)
