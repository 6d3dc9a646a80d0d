"""The slurm executor against a fake ``sbatch`` on PATH that records what was submitted."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import cloudpickle
import pytest
from mlflow.tracking import MlflowClient

import toy_plugin
from deepscope.config import load_pipeline
from deepscope.sweep.executors import SweepJob
from deepscope.sweep.expand import point_hash
from deepscope.sweep.submit import plan_sweep, submit_sweep
from deepscope.testing import make_host

TESTS = Path(__file__).parent

SWEEP = """
[run]
name = "cluster"
seed = 0

[data]
use = "tiny"

[model]
use = "tiny-mlp"

[[stage]]
do = "train"
use = "sgd"

[sweep]
executor = "slurm"
workers = 2

[sweep.grid]
"stage.0.lr" = [0.1, 0.05]
"model.hidden" = [4, 8]

[sweep.slurm]
partition = "gpu-long"
time = 30
gpus = 1
cpus = 6
mem_gb = 16
account = "lab"
setup = ["module load cuda"]
"""

FAKE_SBATCH = """#!/bin/sh
# records each submitted script and answers like sbatch does
n=$(ls "$FAKE_SLURM_LOG" | wc -l)
cp "$1" "$FAKE_SLURM_LOG/submission-$n.sh"
echo "Submitted batch job 4242"
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", "#!/bin/sh\nexit 0\n")):
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "submitted"
    log.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_LOG", str(log))
    return log


def test_slurm_sweep_submits_one_array_with_the_configured_resources(tmp_path, tmp_mlflow, fake_slurm,
                                                                      monkeypatch):
    (tmp_path / "sweep.toml").write_text(SWEEP)
    host = make_host(toy_plugin)
    plan = plan_sweep(tmp_path / "sweep.toml", host.registry, tmp_path / "sw")
    record, started, _ = submit_sweep(plan, host)
    assert len(started) == 4

    (script,) = sorted(fake_slurm.iterdir())  # one sbatch call: one array
    text = script.read_text()
    flags = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", text, re.M))
    assert flags["array"] == "0-3%2"  # four points, two at a time ([sweep] workers)
    assert flags["partition"] == "gpu-long" and flags["account"] == "lab"
    assert flags["time"] == "30" and flags["gpus-per-node"] == "1" and flags["cpus-per-task"] == "6"
    assert flags["mem"] == "16GB" and "requeue" in flags and flags["signal"] == "USR2@90"
    assert "module load cuda" in text
    assert str(record.dir / "slurm") in flags["output"]

    # each array task's pickle runs SweepJob on one point's resolved config
    pickles = sorted((record.dir / "slurm").glob("*/*_submitted.pkl"))
    assert len(pickles) == 4
    submitted = {}
    for p in pickles:
        delayed = cloudpickle.loads(p.read_bytes())
        assert isinstance(delayed.function, SweepJob) and delayed.function.sweep_dir == str(record.dir)
        (digest,) = delayed.args
        submitted[digest] = p
    assert set(submitted) == {p.hash for p in plan.points}
    for point in plan.points:
        assert record.points[point.hash]["job_id"].startswith("4242_")
        assert record.status(point.hash)["status"] == "SUBMITTED"
        resolved = load_pipeline(record.config_path(point.hash), host.registry)
        assert point_hash(resolved) == point.hash
        assert resolved.stages[0].config.lr == point.values["stage.0.lr"]
        assert resolved.model.config.hidden == point.values["model.hidden"]

    # an array task on a node: runs its point as a child of the sweep's parent run
    monkeypatch.setenv("DEEPSCOPE_PLUGINS_MODULES", "toy_plugin")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    digest = plan.points[0].hash
    job = cloudpickle.loads(submitted[digest].read_bytes())
    assert job.function(*job.args) == "FINISHED"
    status = record.status(digest)
    run = MlflowClient(tracking_uri=tmp_mlflow).get_run(status["run_id"])
    assert run.data.tags["mlflow.parentRunId"] == record.data["parent_run_id"]
    assert run.data.tags["deepscope.job_id"] == "4242_0" and run.info.status == "FINISHED"

    # preemption: submitit asks the callable how to requeue; it requeues the same point
    again = job.function.checkpoint(digest)
    assert isinstance(again.function, SweepJob) and again.args == (digest,)
