"""Lazy regime: a linearized network's kernel never changes and GD on it follows the closed form exactly;
wide NTK-parameterized networks follow it closely; ntk-lazy's kernel change falls with width."""

from __future__ import annotations

import deepscope_standard
import pytest
import torch

import deepscope_ntk
from deepscope.testing import make_host, run_toml
from deepscope_ntk.dynamics import Linearized, flat_kernel, gd_mse, predicted_outputs
from deepscope_ntk.empirical import empirical_ntk
from deepscope_ntk.lazy import loglog_slope
from deepscope_ntk.mlp import NTKMLP


def batch(n=12, d=6, k=3):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, d, generator=g, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.randint(0, k, (n,), generator=g), k).double() - 1 / k
    return x, y


def stable_lr(model, x):
    """Half the largest stable step: 2 n / lambda_max of the initial full NTK is the edge."""
    theta = flat_kernel(empirical_ntk(model, x, mode="full"))
    return len(x) / torch.linalg.eigvalsh(theta).max().item()


def network(width=16):
    torch.manual_seed(0)
    return NTKMLP(6, 3, width=width, depth=2, w_std=1.5, b_std=0.1).double()


def test_the_kernel_of_a_linearized_network_does_not_change_while_the_network_s_does():
    x, y = batch()
    lin, net = Linearized(network()), network()
    for model in (lin, net):
        before = empirical_ntk(model, x, mode="full")
        losses = gd_mse(model, x, y, lr=stable_lr(model, x), steps=40)
        after = empirical_ntk(model, x, mode="full")
        change = ((after - before).norm() / before.norm()).item()
        assert losses[-1] < 0.5 * losses[0]  # it did train
        if model is lin:
            assert change < 1e-12
        else:
            assert change > 1e-2  # a narrow network's kernel moves: the oracle is not vacuous
    # before any step the linearized network is the network
    torch.testing.assert_close(Linearized(network())(x), network()(x), rtol=0, atol=1e-14)


def test_gradient_descent_on_a_linearized_network_is_the_closed_form():
    x, y = batch()
    lin = Linearized(network())
    theta = flat_kernel(empirical_ntk(lin, x, mode="full"))
    f0 = lin(x).detach()
    lr = stable_lr(lin, x)
    gd_mse(lin, x, y, lr=lr, steps=25)
    want = predicted_outputs(theta, f0, y, rate=lr / len(x), t=25)
    torch.testing.assert_close(lin(x).detach(), want, rtol=1e-9, atol=1e-11)
    flow = predicted_outputs(theta, f0, y, rate=lr / len(x), t=25, discrete=False)
    assert (flow - want).norm() > 1e-6  # discrete GD and gradient flow differ at this step size


def test_loglog_slope_recovers_a_power_law():
    assert loglog_slope([10, 100, 1000], [3.0, 3.0 / 10 ** 0.5, 3.0 / 1000 ** 0.5 * 10 ** 0.5]) == \
        pytest.approx(-0.5, abs=1e-12)


DYNAMICS = """
[run]
name = "dynamics"
seed = 0
checkpoint_every = 1
[data]
use = "fashion-mnist-sample"
classes = [0, 9]
[model]
use = "{model}"
{extra}
[[stage]]
do = "train"
use = "gd-mse"
steps = 20
lr = 0.3
n = 16
probes = [{{ use = "ntk-dynamics", every = 10 }}]
"""


@pytest.fixture(scope="module")
def host():
    return make_host(deepscope_standard, deepscope_ntk)


def test_in_a_pipeline_a_wide_network_follows_the_prediction_and_a_linearized_one_exactly(host):
    def run(model, extra):
        return run_toml(DYNAMICS.format(model=model, extra=extra), host, track=False).metrics

    lin = run("linearized", 'network = { use = "ntk-mlp", width = 256 }')
    wide = run("ntk-mlp", "width = 4096")
    narrow = run("ntk-mlp", "width = 32")
    p = "probe/ntk-dynamics/"
    assert lin[p + "t"] == wide[p + "t"] == 20
    assert lin[p + "residual"] < 0.9  # training moved the outputs towards the targets
    assert lin[p + "deviation"] < 1e-4  # float32 network against the float64 prediction
    assert wide[p + "deviation"] < narrow[p + "deviation"]
    assert wide[p + "deviation"] < 0.01


def test_ntk_lazy_kernel_change_falls_with_width(host):
    text = """
[run]
name = "lazy"
seed = 0
[data]
use = "fashion-mnist-sample"
[[stage]]
do = "probe"
use = "ntk-lazy"
widths = [32, 256, 2048]
seeds = 1
n = 20
steps = 30
lr = 1.0
chunk_size = 4
"""
    m = run_toml(text.replace("[data]", "[model]\nuse = \"ntk-mlp\"\n[data]"), host, track=False).metrics
    p = "probe/ntk-lazy/"
    assert m[p + "change_32"] > m[p + "change_256"] > m[p + "change_2048"] > 0
    assert -1.0 < m[p + "slope"] < -0.3  # between 1/width and the theory's 1/sqrt(width) bound
