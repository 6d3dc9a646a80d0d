"""The paper's identities: scale vs temperature, Gauss-Newton split, Gamma(P), vanishing gradient."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deepscope_goldilocks.confidence import logit_gradient_alignment, output_measures
from deepscope_goldilocks.gauss_newton import g_term, gamma, split_hessian, subspace_jacobians
from deepscope_goldilocks.hessian import (FlatModel, LossHessian, cross_entropy, positive_curvature,
                                          random_subspace, spectrum_summary, split_batches)


class TemperedMLP(nn.Module):
    """Bias-free ReLU MLP with logits divided by a temperature (homogeneous of degree L)."""

    def __init__(self, widths=(6, 8, 7, 4), temperature=1.0):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:]))
        self.temperature = temperature

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x / self.temperature


def data(n=60, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g, dtype=torch.float64), torch.randint(0, k, (n,), generator=g)


@pytest.mark.parametrize("alpha", [0.1, 0.5, 3.0, 20.0])
def test_weight_scale_equals_inverse_temperature_power_in_a_homogeneous_net(alpha):
    torch.manual_seed(0)
    base = TemperedMLP().double()
    depth = len(base.layers)
    x, y = data()
    scaled = TemperedMLP().double()
    scaled.load_state_dict({k: alpha * v for k, v in base.state_dict().items()})
    tempered = TemperedMLP(temperature=alpha ** -depth).double()
    tempered.load_state_dict(base.state_dict())
    basis = random_subspace(FlatModel(base).dim, 12, torch.Generator().manual_seed(1), dtype=torch.float64)
    h_scaled = LossHessian(FlatModel(scaled), [(x, y)]).subspace(basis)
    h_tempered = LossHessian(FlatModel(tempered), [(x, y)]).subspace(basis)
    # H(alpha theta, T=1) = alpha^-2 H(theta, T=alpha^-L)
    torch.testing.assert_close(h_scaled, h_tempered / alpha ** 2, rtol=1e-10, atol=1e-12 * h_scaled.abs().max().item())
    a, b = spectrum_summary(h_scaled), spectrum_summary(h_tempered)
    assert a["positive_curvature"] == pytest.approx(b["positive_curvature"], abs=1e-10)
    assert a["frac_positive"] == b["frac_positive"]


def test_gauss_newton_plus_h_term_equals_the_autograd_hessian():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4)).double()
    flat = FlatModel(model)
    x, y = data(50)
    eye = torch.eye(flat.dim, dtype=torch.float64)  # d = D: the "subspace" is the whole space
    parts = split_hessian(flat, split_batches((x, y), 17), eye)
    full = torch.autograd.functional.hessian(lambda t: cross_entropy(flat.logits(t, x), y), flat.theta)
    torch.testing.assert_close(parts["hessian"], full, rtol=0, atol=1e-12)
    torch.testing.assert_close(parts["g"] + parts["h_term"], full, rtol=0, atol=1e-10)
    # G independently: J' (diag p - p p') J from explicit per-example Jacobians
    jac = torch.autograd.functional.jacobian(lambda t: flat.logits(t, x), flat.theta)  # (N, K, D)
    p = flat.logits(flat.theta, x).softmax(1).detach()
    expected = sum(j.T @ (torch.diag(q) - torch.outer(q, q)) @ j for j, q in zip(jac, p)) / x.shape[0]
    torch.testing.assert_close(parts["g"], expected, rtol=0, atol=1e-12)
    eig = torch.linalg.eigvalsh(parts["g"])
    assert eig.min() > -1e-12  # PSD
    ratio = positive_curvature(parts["g"])
    assert 1 - 1e-12 <= ratio <= math.sqrt(flat.dim)


def test_subspace_jacobians_are_projected_logit_jacobians():
    torch.manual_seed(2)
    flat = FlatModel(TemperedMLP().double())
    x, _ = data(9)
    basis = random_subspace(flat.dim, 5, torch.Generator().manual_seed(0), dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda t: flat.logits(t, x), flat.theta)
    torch.testing.assert_close(subspace_jacobians(flat, flat.theta, x, basis, chunk_size=2), jac @ basis.T)


def test_h_term_vanishes_when_predictions_are_confidently_correct():
    torch.manual_seed(3)
    model = TemperedMLP().double()
    flat = FlatModel(model)
    x, _ = data(40)
    y = flat.logits(flat.theta, x).argmax(1).detach()  # labels = predictions
    basis = random_subspace(flat.dim, 10, torch.Generator().manual_seed(0), dtype=torch.float64)
    top2 = flat.logits(flat.theta, x).detach().topk(2, dim=1).values
    margin = (top2[:, 0] - top2[:, 1]).min().item()
    norms = []
    for temperature in (1.0, margin / 100):  # every example confident: p - y ~ exp(-100)
        model.temperature = temperature
        parts = split_hessian(FlatModel(model), [(x, y)], basis)
        norms.append(torch.linalg.matrix_norm(parts["h_term"]).item())
    assert norms[0] > 1e-3
    assert norms[1] < 1e-20 * norms[0]  # the 1/T growth of Hess z cannot beat exp(-margin / T)


def test_gamma_closed_forms():
    for k in (2, 3, 10):
        assert gamma(torch.full((7, k), 1.0 / k, dtype=torch.float64)) == pytest.approx(math.sqrt(k - 1))
    onehot = torch.nn.functional.one_hot(torch.tensor([0, 2, 1, 2]), 3).double()
    assert gamma(onehot) == 0.0
    p = torch.rand(20, 5, dtype=torch.float64).softmax(1)
    m = torch.diag(p.mean(0)) - p.T @ p / 20
    assert gamma(p) == pytest.approx((torch.trace(m) / m.norm()).item())


def test_g_term_formula_on_random_inputs():
    g = torch.Generator().manual_seed(0)
    jac = torch.randn(6, 4, 3, generator=g, dtype=torch.float64)
    p = torch.rand(6, 4, generator=g, dtype=torch.float64).softmax(1)
    expected = sum(j.T @ (torch.diag(q) - torch.outer(q, q)) @ j for j, q in zip(jac, p)) / 6
    torch.testing.assert_close(g_term(jac, p), expected)


def test_gradient_vanishes_exactly_when_mean_prediction_equals_label_prior():
    # one bias-free linear layer, every input the same x: every logit gradient is the same for all n
    k, d = 4, 4
    prior = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    labels = torch.tensor([0] * 1 + [1] * 2 + [2] * 3 + [3] * 4)
    x = torch.ones(labels.numel(), d, dtype=torch.float64)
    model = nn.Linear(d, k, bias=False).double()
    with torch.no_grad():  # W x = log(prior) (+ const) so softmax(W x) = prior
        model.weight.copy_(torch.outer(prior.log(), torch.ones(d, dtype=torch.float64)) / d)
    flat = FlatModel(model)
    out = output_measures(flat.logits(flat.theta, x), labels)
    assert out["prior_mismatch"] == pytest.approx(0.0, abs=1e-14)
    assert LossHessian(flat, [(x, labels)]).gradient().norm().item() == pytest.approx(0.0, abs=1e-14)
    assert out["loss"] > 1.0  # high loss, yet no gradient
    with torch.no_grad():
        model.weight[0] += 0.3
    flat = FlatModel(model)
    out = output_measures(flat.logits(flat.theta, x), labels)
    grad_norm = LossHessian(flat, [(x, labels)]).gradient().norm().item()
    assert out["prior_mismatch"] > 0.01 and grad_norm > 0.01
    # closed form: dL/dW = (p_bar - q) x'
    expected = torch.outer(torch.softmax(model.weight @ x[0], 0) - prior, x[0]).norm().item()
    assert grad_norm == pytest.approx(expected, rel=1e-12)


def test_output_measures_against_direct_formulas():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(30, 5, generator=g, dtype=torch.float64)
    logits[0, 2] = 0.0
    y = torch.randint(0, 5, (30,), generator=g)
    out = output_measures(logits, y)
    p = logits.softmax(1)
    assert out["entropy"] == pytest.approx(-(p * p.log()).sum(1).mean().item())
    assert out["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item())
    assert out["zero_logit_fraction"] == pytest.approx(1 / 150)
    q = torch.stack([(y == c).double().mean() for c in range(5)])
    assert out["prior_mismatch"] == pytest.approx((q - p.mean(0)).norm().item())
    uniform = output_measures(torch.zeros(8, 5, dtype=torch.float64), y[:8])
    assert uniform["entropy"] == pytest.approx(math.log(5)) and uniform["gamma"] == pytest.approx(2.0)


def test_logit_gradient_alignment_matches_brute_force_loops():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    flat = FlatModel(model)
    x, y = data(12, k=3, seed=5)
    got = logit_gradient_alignment(flat, x, y, 3)
    params = list(model.parameters())

    def logit_grad(xi, k):
        return torch.cat([g.flatten() for g in torch.autograd.grad(model(xi.unsqueeze(0))[0, k], params)])

    grads = torch.stack([torch.stack([logit_grad(xi, k) for k in range(3)]) for xi in x])  # (N, K, D)
    cos = torch.nn.functional.cosine_similarity
    within, cross = [], []
    for k in range(3):
        members = [i for i in range(12) if y[i] == k]
        pairs = [(i, j) for i in members for j in members if i != j]
        if pairs:
            within.append(sum(cos(grads[i, k], grads[j, k], dim=0).item() for i, j in pairs) / len(pairs))
        allpairs = [(i, j) for i in range(12) for j in range(12) if i != j]
        cross.append(sum(cos(grads[i, k], grads[j, k], dim=0).item() for i, j in allpairs) / len(allpairs))
    assert got["within_class_alignment"] == pytest.approx(sum(within) / len(within), abs=1e-12)
    assert got["cross_class_alignment"] == pytest.approx(sum(cross) / len(cross), abs=1e-12)
