"""Checkpoints: plain-data files, atomic writes, and a SIGKILLed run that resumes exactly."""

from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

import resume_toy_plugin
import toy_plugin
from deepscope import DeepscopeError
from deepscope.checkpoint import (capture_rng, checkpoint_path, load_checkpoint, restore_rng,
                                  save_checkpoint)
from deepscope.config import parse_pipeline
from deepscope.runner import run_pipeline
from deepscope.testing import fresh_store, make_host

TESTS = Path(__file__).parent

PIPELINE = """
[run]
name = "resume"
seed = 3
checkpoint_every = {every}

[data]
use = "tiny"
n_train = 48

[model]
use = "tiny-mlp"
hidden = 6

[[stage]]
do = "train"
use = "resumable"
name = "warm"
epochs = 3

[[stage]]
do = "prune"
use = "mag"
sparsity = 0.5

[[stage]]
do = "train"
use = "resumable"
epochs = 5
probes = [{{ use = "count", every = 1 }}]

[[stage]]
do = "probe"
use = "count"
"""


def _host():
    return make_host(toy_plugin, resume_toy_plugin)


def _histories(uri: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    client = MlflowClient(tracking_uri=uri)
    keys = client.get_run(run_id).data.metrics
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}


SCENARIOS = {
    # steps: stage 0 logs epochs 1-3, stage 2 epochs 4-8, the final probe stage logs at 8
    "mid-stage": (2, "train/resumable/loss", 7, 1),  # stage 2, two epochs after its checkpoint at step 5
    "first-stage": (2, "train/warm/loss", 3, 1),  # stage 0, after its checkpoint at step 2, before its end
    "last-stage": (1, "probe/count/params", 8, 2),  # the probe stage: same key and step as stage 2's probe
}

DRIVER = """
import os, signal, sys
import torch
torch.set_num_threads(1)
import resume_toy_plugin, toy_plugin
from deepscope.config import parse_pipeline
from deepscope.runner import run_pipeline
from deepscope.testing import make_host

warm = {warm!r}  # a full run here first, so the children fork with everything imported (2 cores are slow)
run_pipeline(parse_pipeline({text!r}, make_host(toy_plugin, resume_toy_plugin).registry),
             make_host(toy_plugin, resume_toy_plugin), tracking_uri=warm)

for uri, text, key, step, occurrence in {jobs!r}:
    pid = os.fork()  # one import for all scenarios; each child dies by a real SIGKILL
    if pid == 0:
        host = make_host(toy_plugin, resume_toy_plugin, resume_toy_plugin.KillSwitch(key, step, occurrence))
        run_pipeline(parse_pipeline(text, host.registry), host, tracking_uri=uri)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print(uri, "killed" if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL else status)
"""


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory):
    """Each scenario's store (a fresh sqlite copy) and the run id that was SIGKILLed in it."""
    root = tmp_path_factory.mktemp("killed")
    jobs = []
    for name, (every, key, step, occurrence) in SCENARIOS.items():
        jobs.append((fresh_store(root / name), PIPELINE.format(every=every), key, step, occurrence))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", DRIVER.format(jobs=jobs, warm=fresh_store(root / "warm"), text=PIPELINE.format(every=1))], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcome = dict(line.split() for line in proc.stdout.splitlines() if line.startswith("sqlite"))
    out = {}
    for name, (uri, *_rest) in zip(SCENARIOS, jobs):
        assert outcome[uri] == "killed", proc.stderr[-3000:]
        client = MlflowClient(tracking_uri=uri)
        (run,) = client.search_runs([client.get_experiment_by_name("deepscope").experiment_id])
        assert run.info.status == "RUNNING"  # killed: nobody marked it
        out[name] = (uri, run.info.run_id)
    return out


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_sigkilled_run_resumes_to_the_uninterrupted_result(killed_runs, scenario):
    every, kill_key, kill_step, _ = SCENARIOS[scenario]
    uri, run_id = killed_runs[scenario]
    text = PIPELINE.format(every=every)
    partial = _histories(uri, run_id)

    host = _host()
    reference = run_pipeline(parse_pipeline(text, host.registry), host, tracking_uri=uri)
    expected = _histories(uri, reference.run_id)
    assert partial[kill_key][-1][0] == kill_step  # it logged up to the kill point
    assert len(partial[kill_key]) == len([s for s, _ in expected[kill_key] if s <= kill_step])  # and no further

    resumed = run_pipeline(parse_pipeline(text, host.registry), _host(), tracking_uri=uri, resume_run_id=run_id)
    assert resumed.run_id == run_id and resumed.status == "FINISHED"
    assert resumed.metrics == reference.metrics
    assert _histories(uri, run_id) == expected  # same values at the same steps: nothing lost, nothing twice
    assert MlflowClient(tracking_uri=uri).get_run(run_id).info.status == "FINISHED"
    for a, b in zip(resumed.state.model.state_dict().values(), reference.state.model.state_dict().values()):
        assert torch.equal(a, b)


def test_checkpoints_are_plain_data_and_written_atomically(tmp_mlflow, tmp_path):
    host = _host()
    result = run_pipeline(parse_pipeline(PIPELINE.format(every=2), host.registry), host, tracking_uri=tmp_mlflow)
    path = checkpoint_path(tmp_mlflow, result.run_id)
    assert path.parent == Path(tmp_mlflow[len("sqlite:///"):]).parent / "checkpoints" / result.run_id
    payload = load_checkpoint(path)  # weights_only=True inside
    saved = payload["state"]  # RunState.state_dict()
    assert payload["next_stage"] == 4 and saved["epoch"] == 8 and saved["step"] == result.state.step
    assert set(saved["masks"]) == set(result.state.masks)
    assert not [p.name for p in path.parent.iterdir() if p.name != "last.pt"]  # no temporary left over

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(DeepscopeError, match="cannot read checkpoint"):
        load_checkpoint(evil)
    assert not (tmp_path / "boom").exists()  # weights_only refused to call os.system


class _Boom:
    def __reduce__(self):
        return (os.system, (f"touch {Path(__file__).parent}/boom",))


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"format": 1, "value": torch.tensor([1.0])})

    class Unsaveable:
        pass

    with pytest.raises(Exception):
        save_checkpoint(path, {"format": 1, "value": lambda: 0, "x": Unsaveable()})
    assert torch.equal(torch.load(path, weights_only=True)["value"], torch.tensor([1.0]))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_rng_round_trip_reproduces_every_generator():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gauss value in Python's state
    saved = capture_rng()
    first = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), torch.rand(3).tolist())
    restore_rng(saved)
    again = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), torch.rand(3).tolist())
    assert first == again


def test_resume_refuses_a_different_pipeline_or_a_run_without_checkpoints(tmp_mlflow):
    host = _host()
    plain = run_pipeline(parse_pipeline(PIPELINE.format(every=0), host.registry), host, tracking_uri=tmp_mlflow)
    with pytest.raises(DeepscopeError, match="no checkpoint for run"):
        run_pipeline(parse_pipeline(PIPELINE.format(every=0), host.registry), host, tracking_uri=tmp_mlflow,
                     resume_run_id=plain.run_id)
    done = run_pipeline(parse_pipeline(PIPELINE.format(every=1), host.registry), host, tracking_uri=tmp_mlflow)
    other = PIPELINE.format(every=1).replace("epochs = 5", "epochs = 6")
    with pytest.raises(DeepscopeError, match="differs from the pipeline"):
        run_pipeline(parse_pipeline(other, host.registry), host, tracking_uri=tmp_mlflow, resume_run_id=done.run_id)


def test_cli_run_resume_continues_the_run_and_reports_bad_ids(tmp_mlflow, tmp_path, monkeypatch, capsys):
    from deepscope.cli import main
    from deepscope.plugins import set_host

    monkeypatch.setenv("DEEPSCOPE_PLUGINS_MODULES", "toy_plugin,resume_toy_plugin")
    set_host(None)
    try:
        path = tmp_path / "p.toml"
        path.write_text(PIPELINE.format(every=1))
        host = _host()
        done = run_pipeline(parse_pipeline(path.read_text(), host.registry), host, tracking_uri=tmp_mlflow)
        client = MlflowClient(tracking_uri=tmp_mlflow)
        client.update_run(done.run_id, status="KILLED")  # as if it had died after its last checkpoint
        assert main(["run", str(path), "--resume", done.run_id]) == 0
        assert client.get_run(done.run_id).info.status == "FINISHED"
        assert len(_histories(tmp_mlflow, done.run_id)["train/resumable/loss"]) == 5  # nothing logged twice
        capsys.readouterr()
        assert main(["run", str(path), "--resume", "0123456789abcdef"]) == 2
        assert "no checkpoint for run 0123456789abcdef" in capsys.readouterr().err
    finally:
        set_host(None)


def test_objects_a_weights_only_load_would_refuse_are_refused_when_saving(tmp_path):
    from deepscope.checkpoint import save_checkpoint

    class Scheduler:  # an object that is not its state_dict
        pass

    with pytest.raises(TypeError, match=r"checkpoint\.trainer\.scheduler is a Scheduler"):
        save_checkpoint(tmp_path / "c.pt", {"format": 1, "trainer": {"scheduler": Scheduler()}})
    assert not list(tmp_path.iterdir())  # nothing half-written
    save_checkpoint(tmp_path / "ok.pt", {"trainer": {"optimizer": {"state": {0: torch.ones(2)}, "lr": [0.1]}}})
    assert torch.load(tmp_path / "ok.pt", weights_only=True)["trainer"]["optimizer"]["lr"] == [0.1]
