"""ntk-eigenfeatures: the features sum to the predictor, are orthogonal on the training set; the probe runs."""

from __future__ import annotations

import json
from pathlib import Path

import deepscope_standard
import pytest
import scipy.stats
import torch
from mlflow.tracking import MlflowClient

import deepscope_ntk
from deepscope import ConfigError, DatasetInfo, Network, structure_config
from deepscope.testing import make_host, run_toml
from deepscope_ntk.configs import KernelRegressionConfig
from deepscope_ntk.eigenfeatures import Feature, eigen_decomposition, feature_coefficients, spearman
from deepscope_ntk.krr import make_kernel_regression

INFO = DatasetInfo("toy", 3, (1, 3, 4), mean=(0.5,), std=(0.25,))


def fitted(reg, targets="onehot", n=25):
    config, issues = structure_config(KernelRegressionConfig, {"reg": reg, "targets": targets, "depth": 2},
                                      "$.model", what="model", registry=make_host(deepscope_ntk).registry)
    assert not issues
    net = Network(make_kernel_regression(config, INFO), INFO.mean, INFO.std)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, 1, 3, 4, generator=g), torch.randint(0, 3, (n,), generator=g)
    net.body.fit(net.to_input(x), y)
    return net, x


@pytest.mark.parametrize("reg", [0.0, 0.1])
def test_features_sum_to_the_predictor_and_are_orthogonal_on_the_training_set(reg):
    net, x = fitted(reg)
    body = net.body
    values, vectors, _ = eigen_decomposition(body)
    assert (values[:-1] >= values[1:]).all()  # descending
    probe = torch.rand(7, 1, 3, 4, generator=torch.Generator().manual_seed(5))
    features = [Feature(net, feature_coefficients(body, values, vectors, i)) for i in range(len(x))]
    total = sum(f.regress(probe) for f in features)
    torch.testing.assert_close(total, body.regress(net.to_input(probe)), rtol=1e-9, atol=1e-9)
    on_train = torch.stack([f.regress(x).flatten() for f in features])  # (n features, n * outputs)
    gram = on_train @ on_train.T
    off = gram - torch.diag(torch.diagonal(gram))
    assert off.abs().max().item() < 1e-9 * gram.diagonal().max().item()
    assert gram.diagonal().max().item() > 1e-3  # not orthogonal by being zero


def test_spearman_matches_scipy_with_and_without_ties():
    for a, b in [([0, 1, 2, 3, 10], [0.5, 0.4, 0.45, 0.1, 0.0]), ([0, 1, 2, 3], [0.5, 0.5, 0.2, 0.2]),
                 ([3, 1, 2], [1, 2, 3])]:
        assert spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic, abs=1e-12)


PIPELINE = """
[run]
name = "eigen"
seed = 0
[data]
use = "fashion-mnist-sample"
classes = [0, 9]
[model]
use = "kernel-regression"
targets = "pm1"
[[stage]]
do = "train"
use = "kernel-fit"
n = 200
[[stage]]
do = "probe"
use = "ntk-eigenfeatures"
indices = [0, 1, 2, 50, 150, 199]
n_test = 60
summary_k = 2
attack = { use = "fgsm", eps = 0.1 }
[[stage]]
do = "probe"
use = "ntk-eigenfeatures"
name = "no-budget"
indices = [0, 1, 199]
n_test = 60
attack = { use = "fgsm", eps = 0.0 }
"""


def test_the_probe_logs_per_index_summary_and_a_table(tmp_mlflow):
    host = make_host(deepscope_standard, deepscope_ntk)
    result = run_toml(PIPELINE, host, tracking_uri=tmp_mlflow)
    m = result.metrics
    p = "probe/ntk-eigenfeatures/"
    for i in (0, 1, 2, 50, 150, 199):
        assert 0 <= m[f"{p}robust_acc_{i}"] <= m[f"{p}acc_{i}"] <= 1
    assert m[f"{p}robust_acc_top2"] == pytest.approx((m[f"{p}robust_acc_0"] + m[f"{p}robust_acc_1"]) / 2)
    assert m[f"{p}robust_acc_bottom2"] == pytest.approx((m[f"{p}robust_acc_150"] + m[f"{p}robust_acc_199"]) / 2)
    assert -1 <= m[f"{p}spearman_index_robust_acc"] <= 1
    for i in (0, 1, 199):  # eps 0: the attack changes nothing
        assert m[f"probe/no-budget/robust_acc_{i}"] == m[f"probe/no-budget/acc_{i}"]
    local = Path(MlflowClient(tracking_uri=tmp_mlflow).download_artifacts(result.run_id, ""))
    tables = {tuple(r["index"] for r in json.loads(f.read_text())) for f in local.rglob("eigenfeatures.json")}
    assert tables == {(0, 1, 2, 50, 150, 199), (0, 1, 199)}  # one table per probe stage
    assert len(list(local.rglob("eigenfeature_gradients.png"))) == 2


def test_an_index_beyond_the_support_names_the_limit():
    host = make_host(deepscope_standard, deepscope_ntk)
    with pytest.raises(ConfigError, match="keep indices below 200"):
        run_toml(PIPELINE.replace("indices = [0, 1, 2, 50, 150, 199]", "indices = [0, 200]"), host, track=False)
