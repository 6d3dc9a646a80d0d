"""KIP and Label Solve: the interpolation oracle, the least-squares optimum, a pipeline, and bit-identical resume."""

from __future__ import annotations

import deepscope_standard
import pytest
import torch
from mlflow.tracking import MlflowClient

import deepscope_ntk
from deepscope import hookimpl
from deepscope.testing import interrupt_then_resume, make_host, run_toml
from deepscope_ntk.analytic import fc_relu_kernel
from deepscope_ntk.kip import kip_loss, solve_labels


def kernel(a, b=None):
    return fc_relu_kernel(a, b, depth=1)


def toy(n, d=12, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.randint(0, classes, (n,), generator=g), classes).double() - 1 / classes
    return x, y


def test_support_equal_to_the_target_has_zero_loss_and_zero_gradient():
    x, y = toy(15)
    xs, ys = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    loss, preds = kip_loss(kernel, xs, ys, x, y, reg=0.0)
    loss.backward()
    assert loss.item() < 1e-24
    torch.testing.assert_close(preds.detach(), y, rtol=0, atol=1e-10)
    assert xs.grad.abs().max().item() < 1e-10 and ys.grad.abs().max().item() < 1e-10
    # and a support that is not the target has a loss and a gradient: the oracle is not vacuous
    other = (x + 0.05).requires_grad_(True)
    moved, _ = kip_loss(kernel, other, y, x, y, reg=0.0)
    moved.backward()
    assert moved.item() > 1e-6 and other.grad.abs().max().item() > 1e-6


def test_label_solve_is_the_least_squares_optimum():
    xt, yt = toy(60, seed=1)
    xs = xt[:9] + 0.01
    solved = solve_labels(kernel, xs, xt, yt, reg=1e-6)
    labels = solved.clone().requires_grad_(True)
    loss, _ = kip_loss(kernel, xs, labels, xt, yt, reg=1e-6)
    loss.backward()
    assert labels.grad.abs().max().item() < 1e-9 * max(1.0, labels.abs().max().item())  # stationary
    for seed in range(3):  # and no perturbation of it does better
        nudged = solved + 0.01 * torch.randn(solved.shape, generator=torch.Generator().manual_seed(seed),
                                             dtype=torch.float64)
        assert kip_loss(kernel, xs, nudged, xt, yt, 1e-6)[0] > loss
    # support = target: the solved labels are the targets themselves
    torch.testing.assert_close(solve_labels(kernel, xt[:20], xt[:20], yt[:20], 0.0), yt[:20], rtol=0, atol=1e-8)


PIPELINE = """
[run]
name = "kip"
seed = 0
checkpoint_every_steps = 4
[data]
use = "fashion-mnist-sample"
classes = [0, 6]
[model]
use = "kernel-regression"
reg = 1e-6
targets = "centered"
[[stage]]
do = "distill"
use = "kip"
name = "kip"
ipc = 2
steps = 12
target_batch = 200
learn_labels = true
eval_every = 6
test_n = 200
[[stage]]
do = "train"
use = "kernel-fit"
data = "synthetic/kip"
test_n = 200
"""


@pytest.fixture(scope="module")
def host():
    return make_host(deepscope_standard, deepscope_ntk)


@pytest.fixture(scope="module")
def straight(host):
    return run_toml(PIPELINE, host, track=False)


def test_kip_lowers_its_loss_and_a_later_kernel_fit_trains_on_the_support(straight):
    m, history = straight.metrics, straight.state.synthetic
    assert straight.status == "FINISHED"
    assert len(history) == 4 and history.label_kind == "regression"
    assert m["distill/kip/synthetic_size"] == 4
    assert m["train/kernel-fit/support"] == 4
    assert m["distill/kip/final_test_acc"] == pytest.approx(m["train/kernel-fit/test_acc"])  # same predictor
    assert m["train/kernel-fit/test_acc"] > 0.6  # T-shirt against shirt from 4 images; chance 0.5


def test_kip_loss_falls_over_the_steps(host):
    text = PIPELINE.replace("steps = 12", "steps = 30").replace("learn_labels = true", "learn_labels = false")
    losses = []

    class Record:
        @hookimpl
        def deepscope_metrics_logged(self, run, metrics, step):
            if "distill/kip/loss" in metrics:
                losses.append(metrics["distill/kip/loss"])

    result = run_toml(text, make_host(deepscope_standard, deepscope_ntk, Record()), track=False)
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    assert result.state.synthetic.label_kind == "hard"  # fixed labels stay class indices


def test_a_killed_kip_run_resumes_bit_for_bit(host, straight, tmp_mlflow):
    run_id, resumed = interrupt_then_resume(PIPELINE, (deepscope_standard, deepscope_ntk), tmp_mlflow,
                                            key="distill/kip/loss", step=7)  # between the checkpoints of 4 and 8
    assert resumed.status == "FINISHED"
    want = straight.state.synthetic_set("synthetic/kip")
    got = resumed.state.synthetic_set("synthetic/kip")
    assert torch.equal(got.x, want.x) and torch.equal(got.y, want.y)
    losses = MlflowClient(tracking_uri=tmp_mlflow).get_metric_history(run_id, "distill/kip/loss")
    assert sorted(m.step for m in losses) == list(range(1, 13))
    assert resumed.metrics["distill/kip/loss"] == straight.metrics["distill/kip/loss"]
    assert resumed.metrics["train/kernel-fit/test_acc"] == straight.metrics["train/kernel-fit/test_acc"]


def test_label_solve_in_a_pipeline_beats_the_one_hot_labels(host):
    text = """
[run]
name = "label-solve"
seed = 0
[data]
use = "fashion-mnist-sample"
classes = [0, 6]
[model]
use = "kernel-regression"
[[stage]]
do = "distill"
use = "label-solve"
ipc = 5
target_n = 400
test_n = 200
"""
    m = run_toml(text, host, track=False).metrics
    assert m["distill/label-solve/loss"] < m["distill/label-solve/loss_before"]
    assert m["distill/label-solve/targets"] == 400
    assert m["distill/label-solve/test_acc"] > 0.6


def test_label_solve_keeps_the_images_of_an_earlier_set(host):
    text = """
[run]
name = "label-solve-on-a-set"
seed = 0
[data]
use = "fashion-mnist-sample"
classes = [0, 6]
[model]
use = "kernel-regression"
[[stage]]
do = "distill"
use = "synthetic-baseline"
name = "random"
ipc = 4
grid = false
[[stage]]
do = "distill"
use = "label-solve"
support = "synthetic/random"
target_n = 200
test_n = 100
"""
    result = run_toml(text, host, track=False)
    random, solved = result.state.synthetic_set("synthetic/random"), result.state.synthetic_set("synthetic/label-solve")
    assert torch.equal(solved.x, random.x) and solved.label_kind == "regression"
    assert solved.y.shape == (8, 2)
    m = result.metrics
    assert m["distill/label-solve/loss"] < m["distill/label-solve/loss_before"]
