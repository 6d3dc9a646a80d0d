"""The slurm executor on a real one-node SLURM cluster (``bash scripts/slurm-local-cluster.sh start``).

Marked ``slurm_cluster``; without a running cluster every test here skips, naming the command that
starts one. Points are tiny (the toy dataset, a few epochs that sleep a little so that a test can act
while they run) and each test checks what only a real scheduler shows: one array per sweep, its
parallelism, states while running, a requeue that resumes, a cancel, exactly-once points.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from deepscope.cli import main
from deepscope.sweep.record import SweepRecord
from deepscope.sweep.report import rows

TESTS = Path(__file__).parent
ROOT = TESTS.parent
START = "bash scripts/slurm-local-cluster.sh start"

pytestmark = pytest.mark.slurm_cluster

# a trainer whose epochs take nap_s seconds and that resumes mid-stage from a checkpoint
NAP_PLUGIN = '''
import time

import attrs
import torch
from torch import nn

from deepscope import hookimpl, param, positive


@attrs.define
class NapConfig:
    epochs: int = param(3, doc="epochs", validator=positive)
    nap_s: float = param(0.0, doc="seconds each epoch sleeps")


class NapTrainer:
    def __init__(self, config):
        self.config = config

    def train(self, state, ctx):
        opt = torch.optim.SGD(state.model.parameters(), lr=0.1)
        for _ in range(ctx.resume(optimizer=opt), self.config.epochs):
            total = 0.0
            for x, y in state.data.train_loader():
                loss = nn.functional.cross_entropy(state.model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item()
            time.sleep(self.config.nap_s)
            ctx.epoch_end({"loss": total}, checkpoint={"optimizer": opt})


@hookimpl
def deepscope_register_trainers(register):
    register("nap-sgd", NapTrainer, NapConfig)
'''

SWEEP = """
[run]
name = "{name}"
seed = 0
experiment = "slurm-cluster"
device = "cpu"
checkpoint_every = 1

[data]
use = "tiny"

[model]
use = "tiny-mlp"

[[stage]]
do = "train"
use = "nap-sgd"
epochs = {epochs}
nap_s = {nap_s}

[sweep]
executor = "slurm"
workers = 2

[sweep.grid]
"run.seed" = {seeds}

[sweep.slurm]
partition = "debug"
cpus = 1
time = 10
"""


@functools.lru_cache(maxsize=1)
def cluster_conf() -> str | None:
    """The SLURM_CONF of a running cluster: $SLURM_CONF, else the local cluster script's (asked once)."""
    conf = os.environ.get("SLURM_CONF") or str(Path(os.environ.get("DEEPSCOPE_SLURM_DIR", "/tmp/deepscope-slurm"))
                                               / "slurm.conf")
    if not Path(conf).exists() or shutil.which("sbatch") is None:
        return None
    try:
        done = subprocess.run(["sinfo", "-h", "-p", "debug", "-o", "%t"], capture_output=True, text=True,
                              timeout=20, env={**os.environ, "SLURM_CONF": conf}, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    states = done.stdout.split()
    return conf if done.returncode == 0 and any(s.rstrip("*") in ("idle", "mix", "alloc") for s in states) else None


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """A running cluster, this test's folder as cwd, and the environment its jobs inherit."""
    pytest.importorskip("submitit")
    conf = cluster_conf()
    if conf is None:
        pytest.skip(f"no SLURM cluster with an idle `debug` partition: start one with `{START}`")
    (tmp_path / "nap_plugin.py").write_text(NAP_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLURM_CONF", conf)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("DEEPSCOPE_PLUGINS_MODULES", "toy_plugin,nap_plugin")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def write_sweep(folder: Path, name: str, seeds: list[int], epochs: int, nap_s: float) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(SWEEP.format(name=name, seeds=seeds, epochs=epochs, nap_s=nap_s))
    return path


def slurm(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True, timeout=30).stdout


def tasks(array: str) -> dict[str, tuple[str, int]]:
    """task id -> (state, restarts), straight from squeue."""
    text = slurm("squeue", "-h", "-r", "-t", "all", "-j", array, "-O", "JobArrayID:40,State:24,RestartCnt:8")
    return {f[0]: (f[1], int(f[2])) for f in (line.split() for line in text.splitlines()) if len(f) == 3}


def wait_for(what: str, check, record: SweepRecord, timeout: float = 150.0, poll: float = 0.5):
    """Poll ``check()`` until it is truthy; on timeout fail with the scheduler's and the points' view."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(poll)
    logs = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in sorted((record.dir / "slurm").glob("*/*.err")))
    pytest.fail(f"timed out waiting for {what}\nsqueue:\n{slurm('squeue', '-r', '-t', 'all')}\n"
                f"points: {[(d, record.status(d)) for d in record.points]}\n{logs}")


def children(record: SweepRecord) -> list:
    client = MlflowClient(tracking_uri=record.data["tracking_uri"])
    return client.search_runs(client.get_experiment_by_name("slurm-cluster").experiment_id,
                              f"tags.`mlflow.parentRunId` = '{record.data['parent_run_id']}'")


def loss_steps(record: SweepRecord, run_id: str) -> list[int]:
    client = MlflowClient(tracking_uri=record.data["tracking_uri"])
    (key,) = [k for k in client.get_run(run_id).data.metrics if k.endswith("/loss")]
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def statuses(record: SweepRecord) -> list[str]:
    return [record.status(d).get("status") for d, _ in record.ordered()]


def test_one_array_two_at_a_time_status_while_running_and_each_point_runs_once(cluster, capsys):
    file = write_sweep(cluster, "array", [0, 1, 2], epochs=2, nap_s=2)
    assert main(["sweep", str(file), "--dir", "sw"]) == 0
    record = SweepRecord.open(cluster / "sw")
    jobs = [record.points[d]["job_id"] for d, _ in record.ordered()]
    arrays = {j.split("_")[0] for j in jobs}
    assert len(arrays) == 1 and sorted(j.split("_")[1] for j in jobs) == ["0", "1", "2"]  # one array
    (array,) = arrays
    text = (cluster / "sw" / "slurm" / array / f"{array}_submission.sh").read_text()
    assert "#SBATCH --array=0-2%2" in text and "#SBATCH --cpus-per-task=1" in text
    assert "gpus-per-node" not in text  # a CPU pipeline on a GPU-less partition asks for none

    seen_running, most_running = set(), 0
    def all_ended():
        nonlocal most_running
        states = tasks(array)
        most_running = max(most_running, sum(s == "RUNNING" for s, _ in states.values()))
        seen_running.update(r.get("scheduler") for r in rows(record) if r.get("scheduler"))
        return all(s in ("FINISHED", "FAILED", "KILLED") for s in statuses(record))
    wait_for("every point to end", all_ended, record)
    assert statuses(record) == ["FINISHED"] * 3
    assert most_running == 2  # --array=...%2 with 1-CPU tasks: two at a time, never three
    assert "RUNNING" in seen_running  # sweep status showed SLURM's state while the points ran
    assert any(label.startswith("PENDING (") for label in seen_running)  # and why the third one waited
    runs = children(record)
    assert sorted(r.data.tags["deepscope.sweep.hash"] for r in runs) == sorted(record.points)
    assert all(r.info.status == "FINISHED" for r in runs)

    # a requeue that lands after the point finished: the task restarts and exits, no second run
    first = jobs[0]
    slurm("scontrol", "requeue", first)
    wait_for("the requeued finished task to end again",
             lambda: tasks(array).get(first) == ("COMPLETED", 1), record)
    log = (cluster / "sw" / "slurm" / first / f"{first}_0_log.out").read_text()
    assert "already FINISHED" in log
    assert len(children(record)) == 3

    # a second submission skips the FINISHED points: nothing new is submitted or run
    capsys.readouterr()
    assert main(["sweep", str(file), "--dir", "sw"]) == 0
    assert "3 points already FINISHED" in " ".join(capsys.readouterr().err.split())
    again = SweepRecord.open(cluster / "sw")
    assert [again.points[d]["job_id"] for d, _ in again.ordered()] == jobs
    assert len(children(again)) == 3
    assert again.data.get("parent_status") == "FINISHED"


def test_requeue_resumes_exactly_scancel_ends_killed_and_resubmission_runs_only_what_is_not_in_flight(cluster):
    epochs = 6
    file = write_sweep(cluster, "requeue", [0, 1], epochs=epochs, nap_s=3)
    assert main(["sweep", str(file), "--dir", "sw"]) == 0
    record = SweepRecord.open(cluster / "sw")
    (requeued, requeued_job), (cancelled, cancelled_job) = [(d, p["job_id"]) for d, p in record.ordered()]
    array = requeued_job.split("_")[0]

    def checkpointed(digest):
        run_id = record.status(digest).get("run_id")
        if record.status(digest).get("status") != "RUNNING":
            return None
        try:
            return run_id if len(loss_steps(record, run_id)) >= 2 else None
        except ValueError:  # no loss logged yet
            return None
    run0 = wait_for("point 0 to log two epochs", lambda: checkpointed(requeued), record)
    run1 = wait_for("point 1 to log two epochs", lambda: checkpointed(cancelled), record)
    slurm("scontrol", "requeue", requeued_job)
    slurm("scancel", cancelled_job)

    def scheduler(digest):
        return next(r.get("scheduler") for r in rows(record) if r["hash"] == digest)
    label = wait_for("sweep status to show the requeue",
                     lambda: (scheduler(requeued) or "").startswith("REQUEUED") and scheduler(requeued), record,
                     timeout=60, poll=0.2)
    assert label.startswith("REQUEUED")
    wait_for("the cancelled point to end", lambda: record.status(cancelled).get("status") == "KILLED", record)
    client = MlflowClient(tracking_uri=record.data["tracking_uri"])
    wait_for("the cancelled run to end KILLED", lambda: client.get_run(run1).info.status == "KILLED", record)
    # SLURM shows COMPLETING while it tears the job down, then CANCELLED: wait for the final state
    wait_for("the scheduler to show the cancelled job CANCELLED", lambda: scheduler(cancelled) == "CANCELLED",
             record, timeout=60, poll=0.2)

    # submit again while the requeued point waits: it is in flight and skipped, the KILLED one resumes
    wait_for("the requeued point to be SUBMITTED again",
             lambda: record.status(requeued).get("requeued") and record.status(requeued)["status"] != "KILLED",
             record)
    assert main(["sweep", str(file), "--dir", "sw"]) == 0
    record = SweepRecord.open(cluster / "sw")
    assert record.points[requeued]["job_id"] == requeued_job
    assert record.points[cancelled]["job_id"].split("_")[0] != array

    wait_for("both points to finish", lambda: statuses(record) == ["FINISHED", "FINISHED"], record)
    status = record.status(requeued)
    assert status["run_id"] == run0 and status["resumed"] is True  # the same MLflow run, continued
    assert loss_steps(record, run0) == list(range(1, epochs + 1))  # every epoch logged exactly once
    assert client.get_run(run0).info.status == "FINISHED"
    assert tasks(array)[requeued_job][1] == 1
    assert record.status(cancelled)["run_id"] == run1
    assert loss_steps(record, run1) == list(range(1, epochs + 1))
    assert sorted(r.data.tags["deepscope.sweep.hash"] for r in children(record)) == sorted([requeued, cancelled])
