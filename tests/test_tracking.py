"""MLflow tracking: what a run leaves in the store, for sqlite and a real server."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import toy_plugin
from mlflow.tracking import MlflowClient

from deepscope.errors import ConfigError, RunFailed
from deepscope.testing import make_host, run_toml

PIPELINE = """
[run]
name = "tracked"
experiment = "exp-a"
seed = 3

[data]
use = "tiny"

[model]
use = "tiny-mlp"

[[stage]]
do = "train"
use = "sgd"
epochs = 3
probes = [{ use = "count", every = 1 }]

[[stage]]
do = "attack"
use = "shift"
eps = 0.1
"""


def check_run(uri: str, run_id: str) -> None:
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "tracked"
    params = run.data.params
    assert params["run.seed"] == "3" and params["stage.0.epochs"] == "3" and params["stage.1.eps"] == "0.1"
    assert params["stage.0.probes.0.use"] == "count"
    losses = client.get_metric_history(run_id, "train/sgd/loss")
    assert [m.step for m in losses] == [1, 2, 3]
    assert [m.step for m in client.get_metric_history(run_id, "probe/count/params")] == [1, 2, 3]
    assert "attack/shift/robust_acc" in run.data.metrics
    tags = run.data.tags
    assert tags["deepscope.device"] == "cpu" and tags["deepscope.seed"] == "3"
    assert tags["deepscope.plugin.toy_plugin"] == "0+local"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens its runs table
    artifacts = [a.path for a in client.list_artifacts(run_id, "config")]
    assert artifacts == ["config/pipeline.toml"]
    local = client.download_artifacts(run_id, "config/pipeline.toml")
    text = open(local).read()
    assert 'use = "sgd"' in text and "lr = 0.1" in text  # defaults are resolved


def test_sqlite_run_has_params_metrics_artifact_tags(tmp_mlflow):
    result = run_toml(PIPELINE, make_host(toy_plugin))
    assert result.status == "FINISHED" and result.tracking_uri == tmp_mlflow
    check_run(tmp_mlflow, result.run_id)
    exp = MlflowClient(tmp_mlflow).get_experiment_by_name("exp-a")
    store_dir = tmp_mlflow[len("sqlite:///"):].rsplit("/", 1)[0]
    assert exp.artifact_location.startswith(f"file://{store_dir}/mlartifacts/")


def test_default_uri_is_sqlite_in_cwd(tmp_path, monkeypatch):
    from deepscope.tracking import resolve_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert resolve_tracking_uri("http://example:5000") == "http://example:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////x/y.db")
    assert resolve_tracking_uri() == "sqlite:////x/y.db"


def _runs(uri: str, experiment: str = "failures"):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id])


FAILING = """
[run]
name = "doomed"
seed = 0
experiment = "failures"
[data]
use = "tiny"
[model]
use = "tiny-mlp"
[[stage]]
do = "train"
use = "sgd"
epochs = 2
[[stage]]
do = "probe"
use = "raise"
error = "{error}"
"""


def test_failed_run_keeps_its_metrics_and_ends_failed(tmp_mlflow):
    with pytest.raises(RunFailed, match="RuntimeError: probe exploded"):
        run_toml(FAILING.format(error="runtime"), make_host(toy_plugin))
    (run,) = _runs(tmp_mlflow)
    assert run.info.status == "FAILED"
    history = MlflowClient(tmp_mlflow).get_metric_history(run.info.run_id, "train/sgd/loss")
    assert [m.step for m in history] == [1, 2]


def test_interrupted_run_ends_killed(tmp_mlflow):
    with pytest.raises(KeyboardInterrupt):
        run_toml(FAILING.format(error="interrupt"), make_host(toy_plugin))
    (run,) = _runs(tmp_mlflow)
    assert run.info.status == "KILLED"
    assert "train/sgd/loss" in run.data.metrics


def test_config_error_at_run_time_names_the_stage_key(tmp_mlflow):
    with pytest.raises(ConfigError) as info:
        run_toml(FAILING.format(error="config"), make_host(toy_plugin), file="f.toml")
    assert str(info.value) == "f.toml: $.stage[1].error: bad value discovered at run time"
    (run,) = _runs(tmp_mlflow)
    assert run.info.status == "FAILED"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    import flask  # noqa: F401  (the server needs the full mlflow package: `pip install 'deepscope[ui]'`)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
        assert proc.poll() is None, "mlflow server exited early"
    else:
        proc.kill()
        pytest.fail("mlflow server did not become healthy in 90 s")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_real_mlflow_server(mlflow_server, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = run_toml(PIPELINE, make_host(toy_plugin), tracking_uri=mlflow_server)
    assert result.tracking_uri == mlflow_server
    check_run(mlflow_server, result.run_id)
