"""Analytic NTK/NNGP oracles: a depth-1 closed form by hand, wide empirical kernels converge, neural-tangents."""

from __future__ import annotations

import math

import pytest
import torch

from deepscope_ntk.analytic import fc_relu_kernel
from deepscope_ntk.empirical import empirical_ntk
from deepscope_ntk.mlp import NTKMLP


def by_hand_depth1(x1, x2, w_std, b_std, same=False):
    """One hidden ReLU layer, written out scalar by scalar from the arc-cosine formulas (same: x1 is x2,
    angle exactly 0)."""
    d = len(x1)
    w2, b2 = w_std ** 2, b_std ** 2
    s12, s11, s22 = (w2 * float(u @ v) / d + b2 for u, v in ((x1, x2), (x1, x1), (x2, x2)))
    cos = max(-1.0, min(1.0, s12 / math.sqrt(s11 * s22)))
    t = 0.0 if same else math.acos(cos)
    e_relu = math.sqrt(s11 * s22) * (math.sin(t) + (math.pi - t) * cos) / (2 * math.pi)
    e_drelu = (math.pi - t) / (2 * math.pi)
    nngp = w2 * e_relu + b2
    ntk = nngp + w2 * e_drelu * s12
    return nngp, ntk


def test_depth1_matches_the_closed_form_by_hand():
    torch.manual_seed(0)
    x = torch.randn(4, 7, dtype=torch.float64)
    ntk = fc_relu_kernel(x, depth=1, w_std=1.3, b_std=0.4, get="ntk")
    nngp = fc_relu_kernel(x, depth=1, w_std=1.3, b_std=0.4, get="nngp")
    for i in range(4):
        for j in range(4):
            want_nngp, want_ntk = by_hand_depth1(x[i], x[j], 1.3, 0.4, same=i == j)
            assert nngp[i, j].item() == pytest.approx(want_nngp, rel=1e-12)
            assert ntk[i, j].item() == pytest.approx(want_ntk, rel=1e-12)


def test_depth0_is_the_linear_kernel():
    x1, x2 = torch.randn(3, 5, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    torch.testing.assert_close(fc_relu_kernel(x1, x2, depth=0, w_std=2.0, b_std=0.5), 4.0 * x1 @ x2.T / 5 + 0.25)


def test_relu_of_the_diagonal_halves_the_variance():
    """On x = x' the degree-1 arc-cosine kernel is q/2, so NNGP(x, x) at depth 2 is known exactly."""
    x = torch.randn(3, 6, dtype=torch.float64)
    q1 = 2.0 * (x * x).sum(1) / 6 + 0.01
    q2 = 2.0 * q1 / 2 + 0.01
    q3 = 2.0 * q2 / 2 + 0.01
    diag = torch.diagonal(fc_relu_kernel(x, depth=2, w_std=math.sqrt(2.0), b_std=0.1, get="nngp"))
    torch.testing.assert_close(diag, q3, rtol=1e-13, atol=0)


def relative_error(width, depth, seed, x):
    torch.manual_seed(seed)
    net = NTKMLP(x.shape[1], 1, width=width, depth=depth, w_std=math.sqrt(2.0), b_std=0.1).double()
    emp = empirical_ntk(net, x, mode="trace")
    ana = fc_relu_kernel(x, depth=depth)
    return ((emp - ana).norm() / ana.norm()).item()


@pytest.mark.parametrize("depth,widths", [(1, (64, 1024, 16384)), (2, (64, 512, 4096))])
def test_wide_empirical_ntk_approaches_the_analytic_kernel_like_one_over_sqrt_width(depth, widths):
    torch.manual_seed(123)
    x = torch.randn(6, 8, dtype=torch.float64)
    errors = [sum(relative_error(w, depth, seed, x) for seed in range(3)) / 3 for w in widths]
    assert errors[0] > errors[1] > errors[2]
    for (w_small, e_small), (w_big, e_big) in zip(zip(widths, errors), zip(widths[1:], errors[1:])):
        predicted = math.sqrt(w_big / w_small)  # 4x for 16x the width, 2.8x for 8x
        assert predicted / 2.5 < e_small / e_big < predicted * 2.5, (widths, errors)
    assert errors[-1] < 0.05


def test_matches_neural_tangents_when_it_imports():
    nt = pytest.importorskip("neural_tangents", reason="neural_tangents (JAX) is not installed here; "
                             "install it beside jax to compare with stax")
    import numpy as np
    from neural_tangents import stax

    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(5, 9)), rng.normal(size=(3, 9))
    for depth in (1, 3):
        layers = [stax.Dense(64, W_std=1.5, b_std=0.2), stax.Relu()] * depth + [stax.Dense(1, W_std=1.5, b_std=0.2)]
        _, _, kernel_fn = stax.serial(*layers)
        for get in ("ntk", "nngp"):
            want = np.asarray(kernel_fn(x1, x2, get))
            got = fc_relu_kernel(torch.from_numpy(x1), torch.from_numpy(x2), depth=depth, w_std=1.5,
                                 b_std=0.2, get=get).numpy()
            np.testing.assert_allclose(got, want, rtol=1e-5)
    del nt
