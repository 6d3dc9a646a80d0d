"""Adversarial KIP's oracles: the inner attack's ball and monotone loss, Danskin against finite differences of
the closed-form max on a linear kernel, eps = 0 is kip bit for bit, steps = 0 is the real draw, and resume."""

from __future__ import annotations

import deepscope_ntk
import deepscope_standard
import pytest
import torch
from mlflow.tracking import MlflowClient

import deepscope_robust_data
from deepscope import ConfigError, hookimpl, parse_pipeline
from deepscope.testing import interrupt_then_resume, make_host, run_toml
from deepscope_ntk import fc_relu_kernel, kip_loss
from deepscope_robust_data.adversarial_kip import adversarial_targets, krr_predictor, per_target_loss


def ntk(a, b=None):
    return fc_relu_kernel(a, b, depth=1)


def toy(n, shape=(1, 4, 4), classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=g, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.randint(0, classes, (n,), generator=g), classes).double() - 1 / classes
    return x, y


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_inner_points_stay_in_the_ball_and_the_box_and_never_lower_the_loss(norm):
    xs, ys = toy(6, seed=1)
    xt, yt = toy(40, seed=2)
    eps = 0.2 if norm == "linf" else 1.0
    predict = krr_predictor(ntk, xs, ys, reg=1e-6)
    x_adv, _, clean, robust = adversarial_targets(predict, xt, yt, eps=eps, norm=norm, steps=5, restarts=3,
                                               generator=torch.Generator().manual_seed(0))
    delta = (x_adv - xt).flatten(1)
    bound = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert bound.max().item() <= eps + 1e-12
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    assert torch.all(robust >= clean)
    assert robust.mean() > 1.5 * clean.mean()  # the attack does something: not the clean points back
    torch.testing.assert_close(robust, per_target_loss(predict, x_adv, yt), rtol=0, atol=1e-12)
    torch.testing.assert_close(clean, per_target_loss(predict, xt, yt), rtol=0, atol=0)


def test_the_outer_gradient_is_the_gradient_of_the_max_on_a_linear_kernel():
    """f(z) = z . w with w = X_s^T alpha: the max of 1/2 (z . w - y)^2 over the linf ball is
    1/2 (|x . w - y| + eps |w|_1)^2 in closed form (the box [0, 1] stays inactive). Danskin's gradient, autograd
    of KIP's loss at the detached PGD points, must match central differences of that closed-form max."""

    def linear(a, b=None):
        a = a.flatten(1)
        return a @ (a if b is None else b.flatten(1)).T

    g = torch.Generator().manual_seed(3)
    xs = 0.3 + 0.4 * torch.rand(4, 1, 3, 3, generator=g, dtype=torch.float64)
    ys = torch.randn(4, 1, generator=g, dtype=torch.float64)
    xt = 0.3 + 0.4 * torch.rand(25, 1, 3, 3, generator=g, dtype=torch.float64)
    yt = torch.randn(25, 1, generator=g, dtype=torch.float64)
    eps, reg = 0.05, 1e-3

    def closed_form_max(support):
        lam = reg * torch.trace(linear(support)) / len(support)
        alpha = torch.linalg.solve(linear(support) + lam * torch.eye(len(support), dtype=torch.float64), ys)
        w = support.flatten(1).T @ alpha
        residual = xt.flatten(1) @ w - yt
        return (0.5 * (residual.abs() + eps * w.abs().sum()) ** 2).mean()

    support = xs.clone().requires_grad_(True)
    x_adv, _, _, robust = adversarial_targets(krr_predictor(linear, support, ys, reg), xt, yt, eps=eps, steps=3,
                                           step_size=eps, random_start_=False)
    assert robust.mean().item() == pytest.approx(closed_form_max(xs).item(), rel=1e-10)  # PGD found the max
    loss, _ = kip_loss(linear, support, ys, x_adv.detach(), yt, reg)
    (danskin,) = torch.autograd.grad(loss, support)
    clean_loss, _ = kip_loss(linear, support, ys, xt, yt, reg)
    (clean,) = torch.autograd.grad(clean_loss, support)
    assert (danskin - clean).norm() > 0.1 * danskin.norm()  # the robust gradient is not the clean one
    h = 1e-6
    for seed in range(4):
        direction = torch.randn(xs.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        numeric = (closed_form_max(xs + h * direction) - closed_form_max(xs - h * direction)) / (2 * h)
        assert (danskin * direction).sum().item() == pytest.approx(numeric.item(), rel=1e-6, abs=1e-9)


PIPELINE = """
[run]
name = "adversarial-kip"
seed = 0
checkpoint_every_steps = 3
[data]
use = "fashion-mnist-sample"
classes = [0, 6]
[model]
use = "mlp"
[[stage]]
do = "distill"
use = "{use}"
name = "set"
ipc = 3
steps = 8
target_batch = 60
learn_labels = true
test_n = 100
{extra}
"""


@pytest.fixture(scope="module")
def host():
    return make_host(deepscope_standard, deepscope_ntk, deepscope_robust_data)


def losses_of(host_plugins, text):
    seen = []

    class Record:
        @hookimpl
        def deepscope_metrics_logged(self, run, metrics, step):
            if "distill/set/loss" in metrics:
                seen.append(metrics["distill/set/loss"])

    result = run_toml(text, make_host(*host_plugins, Record()), track=False)
    return result, seen


def test_eps_zero_is_kip_bit_for_bit():
    plugins = (deepscope_standard, deepscope_ntk, deepscope_robust_data)
    kip, kip_losses = losses_of(plugins, PIPELINE.format(use="kip", extra="clamp = true"))
    adv, adv_losses = losses_of(plugins, PIPELINE.format(use="adversarial-kip", extra="eps = 0.0"))
    a, b = kip.state.synthetic, adv.state.synthetic
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert kip_losses == adv_losses and len(adv_losses) == 8
    assert b.extras["method"] == "adversarial-kip" and a.extras["method"] == "kip"
    # and with eps > 0 the set differs: the comparison above is not vacuous
    moved, _ = losses_of(plugins, PIPELINE.format(use="adversarial-kip", extra="eps = 0.1"))
    assert not torch.equal(moved.state.synthetic.x, b.x)


def test_steps_zero_returns_class_balanced_real_training_images(host):
    result = run_toml(PIPELINE.format(use="adversarial-kip", extra="").replace("steps = 8", "steps = 0")
                      .replace("learn_labels = true", "learn_labels = false"), host, track=False)
    chosen = result.state.synthetic
    x, y = result.state.data.tensors("train")
    for image, label in zip(chosen.x, chosen.y):
        same = (x.flatten(1) == image.flatten()).all(1).nonzero().flatten()
        assert len(same) >= 1 and int(y[same[0]]) == int(label)  # an exact training image, with its label
    assert chosen.y.tolist() == [0, 0, 0, 1, 1, 1]


def test_the_robust_loss_is_above_the_clean_loss_and_the_perturbation_bounded(host):
    text = PIPELINE.format(use="adversarial-kip", extra="eps = 0.1\nrestarts = 2")
    history = []

    class Record:
        @hookimpl
        def deepscope_metrics_logged(self, run, metrics, step):
            if "distill/set/loss" in metrics:
                history.append(metrics)

    run_toml(text, make_host(deepscope_standard, deepscope_ntk, deepscope_robust_data, Record()), track=False)
    assert len(history) == 8
    for m in history:
        assert m["distill/set/loss"] >= m["distill/set/clean_loss"]
        assert m["distill/set/perturbation_linf"] <= 0.1 + 1e-12
        assert m["distill/set/target_acc"] <= m["distill/set/clean_target_acc"] + 0.05


def test_a_killed_adversarial_kip_run_resumes_bit_for_bit(host, tmp_mlflow):
    text = PIPELINE.format(use="adversarial-kip", extra="eps = 0.1\nrandom_start = true")
    straight = run_toml(text, host, track=False)

    run_id, resumed = interrupt_then_resume(text, (deepscope_standard, deepscope_ntk, deepscope_robust_data),
                                            tmp_mlflow, key="distill/set/loss", step=5)  # between checkpoints 3, 6
    assert resumed.status == "FINISHED"
    want, got = straight.state.synthetic, resumed.state.synthetic
    assert torch.equal(got.x, want.x) and torch.equal(got.y, want.y)
    history = MlflowClient(tracking_uri=tmp_mlflow).get_metric_history(run_id, "distill/set/loss")
    assert sorted(m.step for m in history) == list(range(1, 9))
    assert resumed.metrics["distill/set/loss"] == straight.metrics["distill/set/loss"]


def test_a_krr_that_is_not_kernel_regression_is_a_validate_error(host):
    text = PIPELINE.format(use="adversarial-kip", extra='krr = { use = "mlp" }')
    with pytest.raises(ConfigError, match=r"\$\.stage\[0\]\.krr: krr must be a kernel-regression model"):
        parse_pipeline(text, host.registry)
