"""Probe empirical-ntk: on a linear model its statistics follow from the closed form K = (z.z' + 1) I_k."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

import deepscope_ntk
from deepscope import StageContext, hookimpl
from deepscope.testing import make_host, run_toml, tiny_data
from deepscope_ntk.configs import EmpiricalNTKProbeConfig
from deepscope_ntk.probes import EmpiricalNTKProbe


class LinearBench:
    @hookimpl
    def deepscope_register_datasets(self, register):
        register("tiny", lambda config: tiny_data(n_train=60, n_test=30, shape=(1, 3, 3), classes=3))

    @hookimpl
    def deepscope_register_models(self, register):
        register("linear", lambda config, info: nn.Sequential(nn.Flatten(), nn.Linear(info.num_inputs, 3)))


def pipeline(model: str, probe: str) -> str:
    return f"""
[run]
name = "ntk-probe"
seed = 0
[data]
use = "tiny"
[model]
use = "{model}"
[[stage]]
do = "probe"
use = "empirical-ntk"
n = 12
{probe}
"""


def closed_form(state, n, k=3, full=False):
    """The linear model's kernel built by hand from the batch the probe takes (first n // k per class)."""
    x, y = state.data.tensors("train")
    x, y = x.numpy().astype(np.float64), y.numpy()
    idx = sorted(i for c in range(k) for i in list(np.flatnonzero(y == c))[: n // k])
    mean, std = np.asarray(state.info.mean)[0], np.asarray(state.info.std)[0]
    z = ((x[idx] - mean) / std).reshape(len(idx), -1)
    gram = z @ z.T + 1
    onehot = np.eye(k)[y[idx]] - 1.0 / k
    if full:
        kernel, targets = np.kron(gram, np.eye(k)), onehot.reshape(-1, 1)
    else:
        kernel, targets = k * gram, onehot
    eigs = np.sort(np.linalg.eigvalsh(kernel))[::-1]
    align = np.sum(targets * (kernel @ targets)) / (np.linalg.norm(kernel) * np.sum(targets ** 2))
    return {"trace": np.trace(kernel), "max_eig": eigs[0], "eig_1": eigs[1], "alignment": align,
            "min_eig": eigs[-1]}


@pytest.mark.parametrize("mode,method", [("trace", "jacobian"), ("trace", "ntk-vp"), ("full", "jacobian")])
def test_linear_model_statistics_match_the_closed_form(mode, method):
    result = run_toml(pipeline("linear", f'mode = "{mode}"\nmethod = "{method}"'),
                      make_host(LinearBench(), deepscope_ntk), track=False)
    m = {k.split("/")[-1]: v for k, v in result.metrics.items() if k.startswith("probe/empirical-ntk/")}
    want = closed_form(result.state, 12, full=mode == "full")
    assert m["n"] == 12
    for key, value in want.items():
        assert m[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
    if want["min_eig"] > 1e-9:
        assert m["cond"] == pytest.approx(want["max_eig"] / want["min_eig"], rel=1e-6)
    assert 0 < m["alignment"] <= 1


def test_the_probe_leaves_the_model_mode_as_it_found_it():
    result = run_toml(pipeline("ntk-mlp", "top_k = 3"), make_host(LinearBench(), deepscope_ntk), track=False)
    state = result.state
    state.model.train()
    stats = EmpiricalNTKProbe(EmpiricalNTKProbeConfig(n=6, top_k=2)).measure(state, StageContext(state, None, "x"))
    assert state.model.training
    assert stats["eig_0"] >= stats["eig_1"] > 0 and "eig_2" not in stats
    assert result.metrics["probe/empirical-ntk/eig_2"] > 0


def test_nngp_kind_statistics_match_the_outputs_inner_product():
    import torch

    result = run_toml(pipeline("linear", 'kind = "nngp"'), make_host(LinearBench(), deepscope_ntk), track=False)
    m = {k.split("/")[-1]: v for k, v in result.metrics.items() if k.startswith("probe/empirical-ntk/")}
    state = result.state
    x, y = state.data.tensors("train")
    idx = sorted(i for c in range(3) for i in torch.nonzero(y == c).flatten()[:4].tolist())
    with torch.no_grad():
        out = state.model.double()(x[idx].double())  # f(x) by the model itself, then its Gram matrix by hand
    gram = (out @ out.T).numpy()
    eigs = np.sort(np.linalg.eigvalsh(gram))[::-1]
    assert m["trace"] == pytest.approx(np.trace(gram), rel=1e-9)
    assert m["max_eig"] == pytest.approx(eigs[0], rel=1e-9)
    assert m["frobenius"] == pytest.approx(np.linalg.norm(gram), rel=1e-9)
