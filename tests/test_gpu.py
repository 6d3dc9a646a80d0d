"""Representative pipelines on CUDA (skipped when no GPU is present)."""

from __future__ import annotations

import pytest
import toy_plugin

from deepscope.testing import make_host, run_toml

PIPELINE = """
[run]
name = "gpu"
seed = 0
device = "cuda"
[data]
use = "tiny"
[model]
use = "tiny-mlp"
[[stage]]
do = "prune"
use = "mag"
compression = 4
[[stage]]
do = "train"
use = "sgd"
epochs = 2
probes = [{ use = "count" }]
[[stage]]
do = "attack"
use = "shift"
"""


@pytest.mark.gpu
def test_core_pipeline_runs_on_cuda(tmp_mlflow):
    result = run_toml(PIPELINE, make_host(toy_plugin))
    assert result.status == "FINISHED"
    assert result.state.device.type == "cuda"
    assert next(result.state.model.parameters()).is_cuda
    assert result.metrics["prune/mag/direct_sparsity"] == pytest.approx(0.75, abs=0.01)


@pytest.mark.gpu
def test_quickstart_runs_on_cuda(tmp_mlflow):
    from deepscope.config import load_pipeline
    from deepscope.plugins import PluginHost
    from deepscope.runner import run_pipeline
    from deepscope.cli import QUICKSTART

    host = PluginHost()
    pipeline = load_pipeline(QUICKSTART, host.registry)
    result = run_pipeline(pipeline, host)
    assert result.state.device.type == "cuda"
    assert result.metrics["train/standard/test_acc"] > 0.7
