"""Kernel regression oracles: interpolation at reg = 0, a clear error when singular, extra-state round trip,
the binary logits, and gradients to the inputs for every kernel."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from deepscope import ConfigError, DatasetInfo, Network, structure_config
from deepscope.testing import make_host

import deepscope_ntk
from deepscope_ntk.configs import KernelRegressionConfig
from deepscope_ntk.krr import balanced_indices, encode_targets, make_kernel_regression

INFO3 = DatasetInfo("toy", 3, (1, 3, 4), mean=(0.5,), std=(0.25,))
INFO2 = DatasetInfo("toy", 2, (1, 3, 4), mean=(0.5,), std=(0.25,))


def krr(info=INFO3, **params):
    config, issues = structure_config(KernelRegressionConfig, params, "$.model", what="model",
                                      registry=make_host(deepscope_ntk).registry)
    assert not issues, issues
    torch.manual_seed(0)
    return make_kernel_regression(config, info)


def data(n, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 3, 4, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("kernel", ["analytic-ntk", "analytic-nngp"])
@pytest.mark.parametrize("targets", ["onehot", "centered"])
def test_ridgeless_regression_interpolates_the_training_set(kernel, targets):
    body = krr(kernel=kernel, targets=targets, depth=2)
    x, y = data(20)
    body.fit(x, y)
    torch.testing.assert_close(body.regress(x), encode_targets(y, 3, targets), rtol=0, atol=1e-8)
    assert (body(x).argmax(1) == y).all()


def test_empirical_ntk_regression_interpolates_and_uses_the_network_kernel():
    body = krr(kernel="empirical-ntk", network={"use": "ntk-mlp", "width": 64})
    x, y = data(15)
    metrics = body.fit(x, y)
    assert metrics["train_mse"] < 1e-16
    torch.testing.assert_close(body.regress(x), encode_targets(y, 3, "onehot"), rtol=0, atol=1e-8)
    assert not any(p.requires_grad for p in body.network.parameters())


def test_ridge_follows_the_trace_convention_and_shrinks_the_fit():
    body = krr(reg=0.1)
    x, y = data(20)
    metrics = body.fit(x, y)
    gram = body.kernel(x)
    assert metrics["lambda"] == pytest.approx(0.1 * torch.trace(gram).item() / 20, rel=1e-12)
    want = torch.linalg.solve(gram + metrics["lambda"] * torch.eye(20, dtype=torch.float64),
                              encode_targets(y, 3, "onehot"))
    torch.testing.assert_close(body.alpha, want, rtol=1e-9, atol=1e-12)
    assert metrics["train_mse"] > 1e-6  # no longer interpolates


def test_singular_system_at_reg_zero_is_a_clear_error_not_nan():
    body = krr(reg=0.0)
    x, y = data(10)
    x = torch.cat([x, x[:3]])  # duplicate support points: K is singular
    y = torch.cat([y, y[:3]])
    with pytest.raises(ConfigError, match="reg > 0") as err:
        body.fit(x, y)
    assert "$.model.reg" in str(err.value)
    krr(reg=1e-6).fit(x, y)  # the fix the message names works


def test_support_lives_in_extra_state_and_round_trips_through_a_state_dict():
    net = Network(krr(), INFO3.mean, INFO3.std)
    x, y = data(12)
    net.body.fit(net.to_input(x), y)
    probe, _ = data(5, seed=1)
    saved = net.state_dict()
    assert "body._extra_state" in saved
    fresh = Network(krr(), INFO3.mean, INFO3.std)
    with pytest.raises(RuntimeError, match="kernel-fit"):
        fresh(probe)
    fresh.load_state_dict(saved)
    torch.testing.assert_close(fresh(probe), net(probe), rtol=0, atol=0)


def test_binary_logits_make_cross_entropy_the_logistic_loss():
    body = krr(INFO2, targets="pm1")
    x, y = data(16, classes=2)
    body.fit(x, y)
    probe, labels = data(6, classes=2, seed=3)
    f = body.regress(probe)[:, 0]
    logits = body(probe.double())
    sign = 2.0 * labels.double() - 1
    torch.testing.assert_close(F.cross_entropy(logits, labels, reduction="none"), F.softplus(-sign * f))
    torch.testing.assert_close(body.regress(x)[:, 0], 2.0 * y.double() - 1, rtol=0, atol=1e-8)


def test_pm1_on_more_than_two_classes_names_the_fix():
    with pytest.raises(ConfigError, match="classes = \\[0, 9\\]"):
        krr(INFO3, targets="pm1")


@pytest.mark.parametrize("params", [{"kernel": "analytic-ntk"},
                                    {"kernel": "empirical-ntk", "network": {"use": "ntk-mlp", "width": 32}},
                                    {"kernel": "empirical-ntk", "method": "ntk-vp",
                                     "network": {"use": "ntk-mlp", "width": 32}}])
def test_gradients_flow_to_the_inputs(params):
    body = krr(**params)
    x, y = data(10)
    body.fit(x, y)
    probe = data(4, seed=2)[0].requires_grad_(True)
    F.cross_entropy(body(probe), torch.tensor([0, 1, 2, 0])).backward()
    assert probe.grad is not None and torch.isfinite(probe.grad).all() and probe.grad.abs().sum() > 0
    # the input gradient is the true derivative: compare with a central finite difference
    direction = torch.randn_like(probe)
    with torch.no_grad():
        eps = 1e-3
        plus = F.cross_entropy(body((probe + eps * direction).double()), torch.tensor([0, 1, 2, 0]))
        minus = F.cross_entropy(body((probe - eps * direction).double()), torch.tensor([0, 1, 2, 0]))
    assert ((plus - minus) / (2 * eps)).item() == pytest.approx((probe.grad * direction).sum().item(), rel=1e-3)


def test_balanced_support_takes_the_first_of_each_class():
    y = torch.tensor([0, 0, 1, 0, 2, 1, 2, 2, 1, 0])
    assert balanced_indices(y, 6, 3, True).tolist() == [0, 1, 2, 4, 5, 6]
    assert balanced_indices(y, 4, 3, False).tolist() == [0, 1, 2, 3]
    assert balanced_indices(y, None, 3, True).tolist() == list(range(10))


def test_empirical_nngp_regression_uses_the_network_outputs_gram_matrix():
    from deepscope_ntk.empirical import empirical_nngp

    body = krr(kernel="empirical-nngp", network={"use": "ntk-mlp", "width": 64}, reg=1e-3)
    x, y = data(15)
    body.fit(x, y)
    with torch.no_grad():
        out = copy.deepcopy(body.network).double()(x.double())  # the outputs by the network itself
    torch.testing.assert_close(body.kernel(x), out @ out.T / 3, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(body.kernel(x), empirical_nngp(body.network, x, mode="trace", dtype=torch.float64) / 3)
    assert torch.linalg.matrix_rank(body.kernel(x)).item() <= 3  # the outputs' Gram: rank at most k


@pytest.mark.parametrize("kernel", ["empirical-ntk", "empirical-nngp"])
def test_of_run_model_adopts_a_frozen_copy_of_the_trained_network(kernel):
    from deepscope_ntk.empirical import empirical_nngp, empirical_ntk
    from deepscope_ntk.mlp import NTKMLP

    body = krr(kernel=kernel, of_run_model=True, reg=1e-3)  # the NNGP of 3 outputs has rank 3
    assert body.network is None  # nothing is built: the kernel is the run's model's
    torch.manual_seed(3)
    trained = NTKMLP(12, 3, width=16, depth=1, w_std=1.4, b_std=0.1)
    x, y = data(9)
    body.adopt_network(trained)
    body.fit(x, y)
    direct = (empirical_ntk(trained, x, mode="trace", dtype=torch.float64) if kernel == "empirical-ntk"
              else empirical_nngp(trained, x, mode="trace", dtype=torch.float64))
    torch.testing.assert_close(body.kernel(x), direct / 3, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        trained.classifier.weight.mul_(2.0)  # training the run's model further leaves the copy as it was
    torch.testing.assert_close(body.kernel(x), direct / 3, rtol=1e-12, atol=1e-12)
    assert all(p.requires_grad for p in trained.parameters())
    assert not any(p.requires_grad for p in body.network.parameters())


def test_of_run_model_needs_an_empirical_kernel_and_a_run_model():
    config, issues = structure_config(KernelRegressionConfig, {"kernel": "analytic-ntk", "of_run_model": True},
                                      "$.model", what="model", registry=make_host(deepscope_ntk).registry)
    assert issues and "of_run_model" in str(issues[0]) and "empirical" in str(issues[0])
    body = krr(kernel="empirical-ntk", of_run_model=True)
    with pytest.raises(ConfigError, match="of_run_model"):
        body.fit(*data(4))
