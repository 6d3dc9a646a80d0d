"""A step-loop distiller killed by SIGKILL at three points resumes to the uninterrupted result, bit for bit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

import toy_plugin
import v2_toy_plugin
from deepscope.config import parse_pipeline
from deepscope.runner import run_pipeline
from deepscope.testing import fresh_store, make_host

TESTS = Path(__file__).parent

PIPELINE = """
[run]
name = "step-resume"
seed = 2
checkpoint_every_steps = 20

[data]
use = "tiny"
n_train = 64

[model]
use = "tiny-mlp"

[[stage]]
do = "distill"
use = "steps"
steps = 240
probes = [{ use = "synthetic-norm", every_steps = 25 }]

[[stage]]
do = "train"
use = "sgd"
data = "synthetic"
epochs = 2

[[stage]]
do = "probe"
use = "synthetic-norm"
"""

SCENARIOS = {  # (key whose logging triggers the kill, its step)
    "between-checkpoints": ("distill/steps/loss", 47),  # resumes from step 40: steps 41-47 are replayed
    "right-after-a-probe": ("distill/steps/probe/synthetic-norm/norm", 225),  # from step 220
    "in-a-later-stage": ("train/sgd/loss", 1),  # the distill stage is done: its set comes from the checkpoint
}


def _host(*extra):
    return make_host(toy_plugin, v2_toy_plugin, *extra)


def _histories(uri: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    client = MlflowClient(tracking_uri=uri)
    keys = client.get_run(run_id).data.metrics
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}


DRIVER = """
import os, signal
import torch
torch.set_num_threads(1)
import resume_toy_plugin, toy_plugin, v2_toy_plugin
from deepscope.config import parse_pipeline
from deepscope.runner import run_pipeline
from deepscope.testing import make_host

for uri, key, step in {jobs!r}:
    pid = os.fork()  # one import for every scenario; each child dies by a real SIGKILL
    if pid == 0:
        host = make_host(toy_plugin, v2_toy_plugin, resume_toy_plugin.KillSwitch(key, step))
        run_pipeline(parse_pipeline({text!r}, host.registry), host, tracking_uri=uri)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print(uri, "killed" if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL else status)
"""


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("killed-steps")
    jobs = [(fresh_store(root / name), key, step) for name, (key, step) in SCENARIOS.items()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", DRIVER.format(jobs=jobs, text=PIPELINE)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcome = dict(line.split() for line in proc.stdout.splitlines() if line.startswith("sqlite"))
    runs = {}
    for name, (uri, _key, _step) in zip(SCENARIOS, jobs):
        assert outcome[uri] == "killed", proc.stderr[-3000:]
        client = MlflowClient(tracking_uri=uri)
        (run,) = client.search_runs([client.get_experiment_by_name("deepscope").experiment_id])
        runs[name] = (uri, run.info.run_id)
    return runs


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    uri = fresh_store(tmp_path_factory.mktemp("reference-steps"))
    host = _host()
    result = run_pipeline(parse_pipeline(PIPELINE, host.registry), host, tracking_uri=uri)
    return result, _histories(uri, result.run_id)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_killed_distillation_resumes_bit_for_bit(killed_runs, reference, scenario):
    uri, run_id = killed_runs[scenario]
    kill_key, kill_step = SCENARIOS[scenario]
    expected_result, expected = reference
    partial = _histories(uri, run_id)
    assert partial[kill_key][-1][0] == kill_step  # it died right where the kill switch fired

    host = _host()
    resumed = run_pipeline(parse_pipeline(PIPELINE, host.registry), host, tracking_uri=uri, resume_run_id=run_id)
    assert resumed.status == "FINISHED" and resumed.run_id == run_id
    assert torch.equal(resumed.state.synthetic.x, expected_result.state.synthetic.x)  # bit for bit
    assert torch.equal(resumed.state.synthetic.y, expected_result.state.synthetic.y)
    assert _histories(uri, run_id) == expected  # every metric step once, with the uninterrupted values
    assert resumed.state.extras["v2toy/history"] == expected_result.state.extras["v2toy/history"]
    assert len(resumed.state.extras["v2toy/history"]) == 240
    for a, b in zip(resumed.state.model.state_dict().values(), expected_result.state.model.state_dict().values()):
        assert torch.equal(a, b)
