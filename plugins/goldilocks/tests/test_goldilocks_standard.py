"""The probes on the standard plugin's models: its init_scale / temperature / bias options obey the identity."""

from __future__ import annotations

import math

import deepscope_standard
import pytest

import deepscope_goldilocks
from deepscope.testing import make_host, run_toml

PIPELINE = """
[run]
name = "goldilocks-standard"
seed = 3
[data]
use = "fashion-mnist-sample"
[model]
use = "mlp"
widths = [12, 12]
bias = false
init = "kaiming-normal"
{model}
[[stage]]
do = "probe"
use = "curvature"
subspace_dim = 8
n_examples = 64
lanczos_steps = 5
dtype = "float64"
[[stage]]
do = "probe"
use = "gauss-newton"
subspace_dim = 8
n_examples = 64
dtype = "float64"
"""


@pytest.fixture
def standard_host():
    return make_host(deepscope_standard, deepscope_goldilocks)


def test_standard_mlp_scale_equals_temperature_and_split_is_exact(standard_host, tmp_mlflow):
    alpha, depth = 4.0, 3  # a power of two: the float32 weights scale without rounding
    scaled = run_toml(PIPELINE.format(model=f"init_scale = {alpha}"), standard_host, tracking_uri=tmp_mlflow)
    tempered = run_toml(PIPELINE.format(model=f"temperature = {alpha ** -depth!r}"), standard_host,
                        tracking_uri=tmp_mlflow)
    for key in ("positive_curvature", "frac_positive"):
        k = f"probe/curvature/{key}"
        assert scaled.metrics[k] == pytest.approx(tempered.metrics[k], abs=1e-9)
    # H(alpha theta, 1) = alpha^-2 H(theta, alpha^-L): the subspace trace scales the same way
    ratio = scaled.metrics["probe/curvature/subspace_trace"] / tempered.metrics["probe/curvature/subspace_trace"]
    assert ratio == pytest.approx(alpha ** -2, rel=1e-9)
    assert scaled.metrics["probe/gauss-newton/split_residual"] < 1e-10
    assert math.isfinite(scaled.metrics["probe/curvature/sharpness"])


def test_init_scale_as_temperature_is_the_tempered_net(standard_host, tmp_mlflow):
    """``init_scale_as = "temperature"`` builds the net at scale 1 with T = alpha^-L: the same run as
    writing that temperature out, so one sweep over init_scale draws both curves on one axis."""
    alpha, depth = 4.0, 3
    by_option = run_toml(PIPELINE.format(model=f'init_scale = {alpha}\ninit_scale_as = "temperature"'),
                         standard_host, tracking_uri=tmp_mlflow)
    written = run_toml(PIPELINE.format(model=f"temperature = {alpha ** -depth!r}"), standard_host,
                       tracking_uri=tmp_mlflow)
    scaled = run_toml(PIPELINE.format(model=f"init_scale = {alpha}"), standard_host, tracking_uri=tmp_mlflow)
    for key in ("positive_curvature", "frac_positive", "subspace_trace"):
        k = f"probe/curvature/{key}"
        assert by_option.metrics[k] == written.metrics[k]
    k = "probe/curvature/positive_curvature"
    assert by_option.metrics[k] == pytest.approx(scaled.metrics[k], abs=1e-9)
    assert by_option.metrics["probe/curvature/subspace_trace"] != pytest.approx(
        scaled.metrics["probe/curvature/subspace_trace"], rel=1e-3)  # alpha^2 apart: the weights were not scaled
