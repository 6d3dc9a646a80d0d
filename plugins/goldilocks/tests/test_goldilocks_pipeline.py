"""The components inside real pipelines (core runner, MLflow store), on a tiny homogeneous MLP."""

from __future__ import annotations

import math

import attrs
import pytest
import torch
from torch import nn

import deepscope_goldilocks
from deepscope import hookimpl, param, positive
from deepscope.testing import make_host, run_toml, tiny_data


@attrs.define
class ScaledMLPConfig:
    hidden: int = param(8, doc="width", validator=positive)
    init_scale: float = param(1.0, doc="alpha", validator=positive)
    temperature: float = param(1.0, doc="T", validator=positive)


class ScaledMLP(nn.Module):
    def __init__(self, config, info):
        super().__init__()
        self.fc1 = nn.Linear(info.num_inputs, config.hidden, bias=False)
        self.fc2 = nn.Linear(config.hidden, config.hidden, bias=False)
        self.fc3 = nn.Linear(config.hidden, info.num_classes, bias=False)
        self.temperature = config.temperature
        with torch.no_grad():
            for p in self.parameters():
                p.mul_(config.init_scale)

    def forward(self, x):
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc3(torch.relu(self.fc2(x))) / self.temperature


class TinyPlugin:
    @hookimpl
    def deepscope_register_datasets(self, register):
        register("tiny", lambda config: tiny_data(n_train=48, n_test=24, classes=3), None)

    @hookimpl
    def deepscope_register_models(self, register):
        register("scaled-mlp", ScaledMLP, ScaledMLPConfig)


@pytest.fixture
def goldilocks_host():
    return make_host(TinyPlugin(), deepscope_goldilocks)


def pipeline(model_params: str, stages: str) -> str:
    return f"""
    [run]
    name = "goldilocks-test"
    seed = 0
    [data]
    use = "tiny"
    [model]
    use = "scaled-mlp"
    {model_params}
    {stages}
    """


PROBES = """
[[stage]]
do = "probe"
use = "curvature"
subspace_dim = 6
n_examples = 40
batch_size = 16
lanczos_steps = 10
per_layer = true
dtype = "float64"
[[stage]]
do = "probe"
use = "gauss-newton"
subspace_dim = 6
n_examples = 40
dtype = "float64"
[[stage]]
do = "probe"
use = "confidence"
n_examples = 40
alignment_examples = 10
"""


def test_probe_stages_log_the_issue_metric_names(goldilocks_host, tmp_mlflow):
    result = run_toml(pipeline("", PROBES), goldilocks_host, tracking_uri=tmp_mlflow)
    assert result.status == "FINISHED"
    m = result.metrics
    c = "probe/curvature/"
    for key in ("positive_curvature", "frac_positive", "trace_hutchinson", "trace_hutchinson_stderr",
                "frobenius_hutchinson", "frobenius_hutchinson_stderr", "sharpness"):
        assert math.isfinite(m[c + key]), key
    assert abs(m[c + "positive_curvature"]) <= math.sqrt(6)
    assert 0 <= m[c + "frac_positive"] <= 1
    assert m[c + "frobenius_hutchinson"] > 0 and m[c + "sharpness"] > 0
    assert abs(m[c + "layer/body.fc2.weight/positive_curvature"]) <= math.sqrt(6)
    g = "probe/gauss-newton/"
    assert m[g + "split_residual"] < 1e-10
    assert m[g + "g_positive_curvature"] >= 1 - 1e-9
    assert m[g + "hessian_spectral_norm"] > 0
    f = "probe/confidence/"
    assert 0 < m[f + "entropy"] <= math.log(3) + 1e-6
    for key in ("prior_mismatch", "grad_norm", "loss", "zero_logit_fraction", "within_class_alignment",
                "cross_class_alignment", "gamma"):
        assert math.isfinite(m[f + key]), key


def test_scale_and_temperature_pipelines_give_the_same_curvature(goldilocks_host, tmp_mlflow):
    probe = PROBES.split("[[stage]]")[1]
    alpha, depth = 4.0, 3
    scaled = run_toml(pipeline(f"init_scale = {alpha}", "[[stage]]" + probe), goldilocks_host,
                      tracking_uri=tmp_mlflow)
    tempered = run_toml(pipeline(f"temperature = {alpha ** -depth}", "[[stage]]" + probe), goldilocks_host,
                        tracking_uri=tmp_mlflow)
    for key in ("positive_curvature", "frac_positive"):
        k = f"probe/curvature/{key}"
        assert scaled.metrics[k] == pytest.approx(tempered.metrics[k], abs=1e-9)


def test_full_batch_gd_trains_and_logs_laziness_with_periodic_probe(goldilocks_host, tmp_mlflow):
    stages = """
    [[stage]]
    do = "train"
    use = "full-batch-gd"
    steps = 30
    base_lr = 0.5
    log_every = 10
    sharpness_steps = 5
    probes = [{ use = "confidence", every = 15, n_examples = 40, alignment_examples = 0 }]
    """
    result = run_toml(pipeline("init_scale = 1.0", stages), goldilocks_host, tracking_uri=tmp_mlflow)
    assert result.status == "FINISHED"
    m = result.metrics
    assert result.state.epoch == 30 and result.state.step == 30
    t = "train/full-batch-gd/"
    assert m[t + "train_acc"] > 0.6  # the tiny task is learnable; chance is 1/3
    assert 0 < m[t + "cos_to_init"] < 1
    for key in ("loss", "test_acc", "grad_norm", "weight_norm", "zero_logit_fraction", "sharpness",
                "cos_weight_grad"):
        assert math.isfinite(m[t + key]), key
    assert "probe/confidence/entropy" in m


def test_full_batch_gd_learning_rate_follows_alpha_power_rule():
    from deepscope_goldilocks.configs import FullBatchGDConfig
    from deepscope_goldilocks.trainer import FullBatchGD, count_layers, learning_rate

    assert learning_rate(0.1, 10.0, 3) == pytest.approx(0.01)
    assert learning_rate(0.1, 10.0, 2) == pytest.approx(0.1)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    assert count_layers(net) == 3

    class Spec:
        config = ScaledMLPConfig(init_scale=100.0)

    class State:
        pipeline = type("P", (), {"model": Spec})()
        model = net

    lr, scale, depth = FullBatchGD(FullBatchGDConfig(base_lr=0.1)).resolve_lr(State)
    assert (scale, depth) == (100.0, 3) and lr == pytest.approx(1e-3)


def test_curvature_as_periodic_probe_takes_the_hutchinson_probe_count(goldilocks_host, tmp_mlflow):
    stages = """
    [[stage]]
    do = "train"
    use = "full-batch-gd"
    steps = 2
    log_every = 1
    sharpness_steps = 0
    probes = [{ use = "curvature", every = 2, subspace_dim = 4, n_examples = 20, probes = 8, lanczos_steps = 0 }]
    """
    result = run_toml(pipeline("", stages), goldilocks_host, tracking_uri=tmp_mlflow)
    m = result.metrics
    assert math.isfinite(m["probe/curvature/trace_hutchinson_stderr"])
    assert "probe/curvature/sharpness" not in m  # lanczos_steps = 0 skips it


def test_config_rejects_a_single_hutchinson_probe():
    from deepscope_goldilocks.configs import CurvatureConfig

    with pytest.raises(ValueError, match="'probes'"):
        CurvatureConfig(probes=1)
    assert CurvatureConfig(probes=0).probes == 0


def test_full_batch_gd_stops_at_the_first_non_finite_loss(goldilocks_host, tmp_mlflow):
    stages = """
    [[stage]]
    do = "train"
    use = "full-batch-gd"
    steps = 200
    base_lr = 1e12
    log_every = 100
    sharpness_steps = 0
    """
    result = run_toml(pipeline("", stages), goldilocks_host, tracking_uri=tmp_mlflow)
    assert result.state.epoch < 200
    assert result.state.step == result.state.epoch - 1  # the diverged step is counted, not taken
    assert not math.isfinite(result.metrics["train/full-batch-gd/loss"])


@pytest.mark.gpu
def test_probes_and_full_batch_gd_run_on_cuda(goldilocks_host, tmp_mlflow):
    stages = PROBES + """
    [[stage]]
    do = "train"
    use = "full-batch-gd"
    steps = 4
    log_every = 2
    sharpness_steps = 5
    """
    text = pipeline("", stages).replace("seed = 0", 'seed = 0\n    device = "cuda"')
    result = run_toml(text, goldilocks_host, tracking_uri=tmp_mlflow)
    assert result.state.device.type == "cuda"
    assert math.isfinite(result.metrics["probe/curvature/sharpness"])
    assert math.isfinite(result.metrics["train/full-batch-gd/sharpness"])


def test_spectral_density_and_several_subspaces_in_a_pipeline(goldilocks_host, tmp_mlflow):
    result = run_toml(pipeline("", """
    [[stage]]
    do = "probe"
    use = "spectral-density"
    n_examples = 40
    lanczos_steps = 12
    n_vectors = 2
    [[stage]]
    do = "probe"
    use = "curvature"
    subspace_dim = 4
    n_subspaces = 3
    n_examples = 40
    probes = 0
    lanczos_steps = 0
    """), goldilocks_host, tracking_uri=tmp_mlflow)
    assert result.status == "FINISHED"
    m = result.metrics
    s = "probe/spectral-density/"
    assert 0 <= m[s + "mass_positive"] <= 1 and m[s + "mass_positive_stderr"] >= 0
    assert m[s + "lambda_min"] <= m[s + "lambda_max"]
    assert m[s + "mass_positive"] + m[s + "mass_negative"] == pytest.approx(1.0, abs=1e-6)
    assert m["probe/curvature/positive_curvature_stderr"] >= 0
    from mlflow.tracking import MlflowClient

    names = {a.path for a in MlflowClient(tmp_mlflow).list_artifacts(result.run_id, "probe/spectral-density")}
    assert {"probe/spectral-density/spectral_density_epoch0.png",
            "probe/spectral-density/spectral_density_epoch0.pt"} <= names
