"""Empirical NNGP oracles: a linear model's closed form, modes, chunking, a chosen layer, and the wide limit."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deepscope_ntk.analytic import fc_relu_kernel
from deepscope_ntk.empirical import empirical_nngp
from deepscope_ntk.mlp import NTKMLP


def test_linear_model_nngp_is_x_wt_w_x():
    torch.manual_seed(0)
    d, k = 6, 4
    model = nn.Linear(d, k, bias=False).double()
    w = model.weight.detach()
    x1, x2 = torch.randn(5, d, dtype=torch.float64), torch.randn(3, d, dtype=torch.float64)
    torch.testing.assert_close(empirical_nngp(model, x1, x2, mode="trace"), x1 @ w.T @ w @ x2.T,
                               rtol=1e-12, atol=1e-12)
    full = empirical_nngp(model, x1, x2, mode="full", chunk_size=2)
    for n in range(5):
        for m in range(3):
            torch.testing.assert_close(full[n, m], torch.outer(w @ x1[n], w @ x2[m]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(empirical_nngp(model, x1, x2, mode="diagonal"), torch.diagonal(full, dim1=2, dim2=3))


def test_chunking_symmetry_and_float64_copy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 5), nn.Tanh(), nn.Linear(5, 3))
    x = torch.rand(7, 2, 4)
    whole = empirical_nngp(model, x, mode="trace", chunk_size=None, dtype=torch.float64)
    torch.testing.assert_close(empirical_nngp(model, x, mode="trace", chunk_size=3, dtype=torch.float64), whole,
                               rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(whole, whole.T, rtol=0, atol=1e-13)
    assert torch.linalg.eigvalsh(whole).min() > -1e-10 * torch.linalg.eigvalsh(whole).max()
    assert whole.dtype == torch.float64 and next(model.parameters()).dtype == torch.float32


def test_a_named_layer_gives_the_kernel_of_its_output():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    x1, x2 = torch.rand(4, 2, 4, dtype=torch.float64), torch.rand(3, 2, 4, dtype=torch.float64)
    h1, h2 = model[:3](x1), model[:3](x2)
    torch.testing.assert_close(empirical_nngp(model, x1, x2, mode="trace", layer="2"), h1 @ h2.T)
    assert not model[2]._forward_hooks  # the hook is removed again
    with pytest.raises(ValueError, match="no submodule 'nope'"):
        empirical_nngp(model, x1, layer="nope")


def test_gradients_reach_the_inputs_not_the_parameters():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    empirical_nngp(model, x, mode="trace").sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def last_hidden_nngp(width: int, x: torch.Tensor, w_std: float, b_std: float, seed: int) -> torch.Tensor:
    """w_std^2 <phi(x), phi(x')> / width + b_std^2 for the post-ReLU features phi of a depth-1 ntk-mlp: the
    readout's NNGP averaged over its weights, which the analytic NNGP gives at infinite width."""
    torch.manual_seed(seed)
    net = NTKMLP(x.shape[1], 3, width=width, depth=1, w_std=w_std, b_std=b_std).double()
    features = nn.Sequential(net.hidden[0], nn.ReLU())
    return w_std ** 2 * empirical_nngp(features, x, mode="trace") / width + b_std ** 2


def test_wide_last_hidden_layer_nngp_approaches_the_analytic_nngp():
    torch.manual_seed(0)
    x = torch.rand(6, 10, dtype=torch.float64)
    w_std, b_std = math.sqrt(2.0), 0.1
    analytic = fc_relu_kernel(x, depth=1, w_std=w_std, b_std=b_std, get="nngp")

    def error(width):
        emp = last_hidden_nngp(width, x, w_std, b_std, seed=1)
        return ((emp - analytic).norm() / analytic.norm()).item()

    wide, narrow = error(16384), error(16)
    # Each entry is a mean over `width` i.i.d. units of relu(u) relu(u'); on the diagonal its relative
    # standard deviation is sqrt(Var relu(u)^2) / E relu(u)^2 = sqrt(5/4 q^2) / (q/2) = sqrt(5) / sqrt(width)
    # (off the diagonal it is smaller for these positively correlated inputs), so the relative Frobenius
    # error is about sqrt(5/width) = 0.017 at width 16384; 3 standard deviations bound it.
    assert wide < 3 * math.sqrt(5 / 16384)
    assert narrow > wide  # it is a limit: the narrow network is farther off
