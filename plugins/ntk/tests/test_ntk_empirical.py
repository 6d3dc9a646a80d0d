"""Empirical NTK oracles: a linear model's closed form, the two methods agree, chunking, symmetry and PSD."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepscope_ntk.empirical import empirical_ntk


def small_net(k=3, d=5, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 7), nn.Tanh(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, k)).double()


@pytest.mark.parametrize("method", ["jacobian", "ntk-vp"])
def test_linear_model_kernel_is_dot_product_plus_one_times_identity(method):
    torch.manual_seed(1)
    k, d = 4, 6
    model = nn.Linear(d, k).double()
    x1, x2 = torch.randn(5, d, dtype=torch.float64), torch.randn(3, d, dtype=torch.float64)
    kernel = empirical_ntk(model, x1, x2, method=method, mode="full", chunk_size=2)
    expected = (x1 @ x2.T + 1)[:, :, None, None] * torch.eye(k, dtype=torch.float64)
    assert kernel.shape == (5, 3, k, k)
    torch.testing.assert_close(kernel, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["full", "trace", "diagonal"])
def test_jacobian_contraction_equals_ntk_vector_products(mode):
    model = small_net()
    x1, x2 = torch.randn(6, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    jac = empirical_ntk(model, x1, x2, method="jacobian", mode=mode)
    vp = empirical_ntk(model, x1, x2, method="ntk-vp", mode=mode)
    torch.testing.assert_close(jac, vp, rtol=1e-12, atol=1e-12)
    assert jac.abs().max() > 0.1  # not trivially zero


def test_trace_and_diagonal_are_reductions_of_the_full_kernel():
    model = small_net()
    x = torch.randn(5, 5, dtype=torch.float64)
    full = empirical_ntk(model, x, mode="full")
    torch.testing.assert_close(empirical_ntk(model, x, mode="diagonal"), torch.diagonal(full, dim1=2, dim2=3))
    torch.testing.assert_close(empirical_ntk(model, x, mode="trace"), full.diagonal(dim1=2, dim2=3).sum(-1))


@pytest.mark.parametrize("method", ["jacobian", "ntk-vp"])
def test_chunking_does_not_change_the_kernel(method):
    model = small_net()
    x1, x2 = torch.randn(7, 5, dtype=torch.float64), torch.randn(5, 5, dtype=torch.float64)
    whole = empirical_ntk(model, x1, x2, method=method, chunk_size=None)
    for chunk in (1, 2, 3):
        torch.testing.assert_close(empirical_ntk(model, x1, x2, method=method, chunk_size=chunk), whole,
                                   rtol=1e-13, atol=1e-13)
    sym_whole = empirical_ntk(model, x1, method=method, chunk_size=None)
    torch.testing.assert_close(empirical_ntk(model, x1, method=method, chunk_size=3), sym_whole,
                               rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("method", ["jacobian", "ntk-vp"])
def test_gram_kernel_is_symmetric_and_positive_semidefinite(method):
    model = small_net(k=2)
    x = torch.randn(9, 5, dtype=torch.float64)
    full = empirical_ntk(model, x, method=method, chunk_size=4)
    flat = full.permute(0, 2, 1, 3).reshape(18, 18)  # (n k) x (n k)
    torch.testing.assert_close(flat, flat.T, rtol=0, atol=1e-13)
    assert torch.linalg.eigvalsh(flat).min() > -1e-10 * torch.linalg.eigvalsh(flat).max()
    trace = empirical_ntk(model, x, method=method, mode="trace", chunk_size=4)
    torch.testing.assert_close(trace, trace.T, rtol=0, atol=1e-13)
    assert torch.linalg.eigvalsh(trace).min() > -1e-10 * torch.linalg.eigvalsh(trace).max()


def test_float64_on_request_from_a_float32_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3))
    x = torch.rand(4, 2, 4)
    k64 = empirical_ntk(model, x, dtype=torch.float64)
    k32 = empirical_ntk(model, x)
    assert k64.dtype == torch.float64 and k32.dtype == torch.float32
    assert next(model.parameters()).dtype == torch.float32  # the model itself is untouched
    torch.testing.assert_close(k64.float(), k32, rtol=1e-5, atol=1e-5)


def test_bad_arguments_are_named():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="method"):
        empirical_ntk(model, torch.randn(2, 2), method="structured")
    with pytest.raises(ValueError, match="mode"):
        empirical_ntk(model, torch.randn(2, 2), mode="sum")
    with pytest.raises(ValueError, match="no parameters"):
        empirical_ntk(nn.ReLU(), torch.randn(2, 2))


def test_auto_resolves_by_the_measured_rule():
    from deepscope_ntk.empirical import VP_MIN_OUTPUTS, choose_method

    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 10))
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 2 * 2, 10))
    assert VP_MIN_OUTPUTS == 3
    for n in (1, 8, 100):
        assert choose_method(conv, n, n, 10, "full") == "jacobian"  # a convolution: always the Jacobian method
        assert choose_method(conv, n, n, 2, "trace") == "jacobian"
        assert choose_method(mlp, n, n, 10, "full") == "ntk-vp"  # full kernel of many outputs, no convolution
        assert choose_method(mlp, n, n, 3, "full") == "ntk-vp"
        assert choose_method(mlp, n, n, 2, "full") == "jacobian"  # two outputs: the contraction is as cheap
        assert choose_method(mlp, n, n, 10, "trace") == "jacobian"
        assert choose_method(mlp, n, n, 10, "diagonal") == "jacobian"


@pytest.mark.parametrize("mode", ["full", "trace"])
def test_auto_gives_the_same_kernel_as_both_methods_and_asks_the_rule_with_n_and_k(mode, monkeypatch):
    import deepscope_ntk.empirical as empirical

    model = small_net(k=4)
    x1, x2 = torch.randn(5, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    auto = empirical_ntk(model, x1, x2, method="auto", mode=mode)
    for method in ("jacobian", "ntk-vp"):
        torch.testing.assert_close(auto, empirical_ntk(model, x1, x2, method=method, mode=mode), rtol=1e-12,
                                   atol=1e-12)
    asked = []
    monkeypatch.setattr(empirical, "choose_method", lambda *args: asked.append(args[1:]) or "ntk-vp")
    empirical_ntk(model, x1, x2, method="auto", mode=mode)
    empirical_ntk(model, x1, method="auto", mode=mode)
    assert asked == [(5, 3, 4, mode), (5, 5, 4, mode)]
