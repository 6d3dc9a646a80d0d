"""The slurm executor against a fake ``sbatch`` on PATH that records what was submitted.

These cover what a real one-node cluster cannot show (GPU partitions, accounts, refusals); the fake
``sinfo`` and ``squeue`` answer from files the tests write. tests/test_sweep_slurm_cluster.py runs
the executor on a real cluster.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import cloudpickle
import pytest
from mlflow.tracking import MlflowClient

import toy_plugin
from deepscope.cli import main
from deepscope.config import load_pipeline
from deepscope.errors import DeepscopeError
from deepscope.sweep.executors import SweepJob
from deepscope.sweep.slurm import NodeShape, TaskState, gres_gpus, parse_sinfo, request_problems
from deepscope.sweep.expand import point_hash
from deepscope.sweep.report import rows
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


# sinfo -h -N -o '%N|%P|%c|%m|%G' and squeue answer with the files the test writes (nothing by default)
FAKE_SINFO = '#!/bin/sh\ncat "$FAKE_SLURM_LOG/../sinfo.txt" 2>/dev/null || printf "g1|gpu-long|32|256000|gpu:a100:4(S:0-1)\\n"\n'
FAKE_SQUEUE = '#!/bin/sh\ncat "$FAKE_SLURM_LOG/../squeue.txt" 2>/dev/null || exit 1\n'


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", "#!/bin/sh\nexit 0\n"), ("sinfo", FAKE_SINFO),
                       ("squeue", FAKE_SQUEUE), ("sacct", "#!/bin/sh\nexit 1\n"),
                       ("scontrol", "#!/bin/sh\nexit 1\n")):
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

    # the point is FINISHED: running its task again (a late requeue, a resubmission) makes no second run
    client = MlflowClient(tracking_uri=tmp_mlflow)
    experiment = run.info.experiment_id
    before = len(client.search_runs([experiment]))
    assert job.function(*job.args) == "FINISHED"
    assert len(client.search_runs([experiment])) == before
    assert record.status(digest)["run_id"] == status["run_id"]


def sbatch_flags(log: Path) -> dict[str, str]:
    (script,) = sorted(log.iterdir())
    return dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", script.read_text(), re.M))


def only_partition(text: str, partition: str = "debug", device: str | None = None) -> str:
    """The test sweep with [sweep.slurm] reduced to ``partition`` (and [run] device when given)."""
    head = text.split("[sweep.slurm]")[0] + f'[sweep.slurm]\npartition = "{partition}"\n'
    return head.replace('seed = 0\n', f'seed = 0\ndevice = "{device}"\n', 1) if device else head


@pytest.mark.parametrize("sinfo, device, gpus, cpus", [
    ("vm|debug*|2|21694|(null)\n", None, None, "2"),          # CPU-only node: no GPUs, CPUs it has
    ("g1|debug|32|256000|gpu:a100:4(S:0-1)\n", None, "1", "4"),  # auto uses a GPU: ask for one
    ("g1|debug|32|256000|gpu:a100:4(S:0-1)\n", "cpu", None, "4"),  # a CPU pipeline gets none
])
def test_unset_gpus_and_cpus_fit_the_partition(tmp_path, tmp_mlflow, fake_slurm, sinfo, device, gpus, cpus):
    (tmp_path / "sinfo.txt").write_text(sinfo)
    (tmp_path / "sweep.toml").write_text(only_partition(SWEEP, device=device))
    host = make_host(toy_plugin)
    submit_sweep(plan_sweep(tmp_path / "sweep.toml", host.registry, tmp_path / "sw"), host)
    flags = sbatch_flags(fake_slurm)
    assert flags.get("gpus-per-node") == gpus and flags["cpus-per-task"] == cpus
    assert flags["partition"] == "debug"


def test_a_request_no_node_can_hold_is_warned_about_at_submission(tmp_path, tmp_mlflow, fake_slurm):
    (tmp_path / "sinfo.txt").write_text("vm|gpu-long*|2|21694|(null)\n")
    (tmp_path / "sweep.toml").write_text(SWEEP)  # gpus = 1, cpus = 6, mem_gb = 16 on a 2-CPU node without GPUs
    host = make_host(toy_plugin)
    with pytest.warns(UserWarning) as caught:
        submit_sweep(plan_sweep(tmp_path / "sweep.toml", host.registry, tmp_path / "sw"), host)
    text = " ".join(str(w.message) for w in caught)
    assert "cpus = 6" in text and "at most 2 CPUs" in text and "gpus = 1" in text and "PartitionConfig" in text
    assert "mem_gb" not in text  # 16 GB fits in 21 GB


def test_request_problems_against_nodes():
    nodes = [NodeShape("a", 8, 64000, 0), NodeShape("b", 4, 32000, 2)]
    assert request_problems("p", nodes, cpus=8, gpus=0, mem_gb=60) == []  # node a
    assert request_problems("p", nodes, cpus=4, gpus=2, mem_gb=None) == []  # node b
    (both,) = request_problems("p", nodes, cpus=8, gpus=2, mem_gb=None)  # each alone fits, not together
    assert "no single node" in both
    assert request_problems("p", None, cpus=99, gpus=9, mem_gb=None) == []  # sinfo unknown: no claim
    assert "no nodes" in request_problems("nope", [], cpus=1, gpus=0, mem_gb=None)[0]


def test_gres_and_sinfo_parsing():
    assert gres_gpus("(null)") == 0
    assert gres_gpus("gpu:a100:4(S:0-1)") == 4
    assert gres_gpus("gpu:2,gpu:v100:1,shard:8") == 3
    assert gres_gpus("gpu") == 1
    text = "a|debug*|2|1000|(null)\nb|gpu|16|64000|gpu:h100:8\na|gpu|2|1000|(null)\n"
    assert parse_sinfo(text, None) == [NodeShape("a", 2, 1000, 0)]
    assert parse_sinfo(text, "gpu") == [NodeShape("b", 16, 64000, 8), NodeShape("a", 2, 1000, 0)]
    assert parse_sinfo(text, "debug") == [NodeShape("a", 2, 1000, 0)]


def test_a_refused_sbatch_is_explained_by_key(tmp_path, tmp_mlflow, fake_slurm):
    sbatch = tmp_path / "bin" / "sbatch"
    sbatch.write_text("#!/bin/sh\necho 'sbatch: error: Invalid generic resource (gres) specification' >&2\nexit 1\n")
    (tmp_path / "sinfo.txt").write_text("g1|gpu-long*|32|256000|gpu:a100:4\n")
    (tmp_path / "sweep.toml").write_text(SWEEP)
    host = make_host(toy_plugin)
    plan = plan_sweep(tmp_path / "sweep.toml", host.registry, tmp_path / "sw")
    with pytest.raises(DeepscopeError) as caught:
        submit_sweep(plan, host)
    message = str(caught.value)
    assert "$.sweep.slurm.gpus" in message and "gpus = 0" in message and "Invalid generic resource" in message
    assert "\n" not in message  # one paragraph
    assert not any((tmp_path / "sw" / "points").glob("*.json"))  # nothing left looking SUBMITTED


def test_status_shows_slurm_states_and_ends_points_slurm_ended(tmp_path, tmp_mlflow, fake_slurm, capsys,
                                                              monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # one table row per line
    (tmp_path / "sweep.toml").write_text(SWEEP)
    host = make_host(toy_plugin)
    plan = plan_sweep(tmp_path / "sweep.toml", host.registry, tmp_path / "sw")
    record, _, _ = submit_sweep(plan, host)
    jobs = {record.points[p.hash]["job_id"]: p.hash for p in plan.points}
    assert sorted(jobs) == ["4242_0", "4242_1", "4242_2", "4242_3"]
    (tmp_path / "squeue.txt").write_text("4242_0  RUNNING  0  None\n4242_1  PENDING  0  PartitionConfig\n"
                                         "4242_2  PENDING  1  BeginTime\n4242_3  CANCELLED  0  None\n")
    labels = {r["job_id"]: r.get("scheduler") for r in rows(record)}
    assert labels == {"4242_0": "RUNNING", "4242_1": "PENDING (PartitionConfig)", "4242_2": "REQUEUED (BeginTime)",
                      "4242_3": "CANCELLED"}
    capsys.readouterr()
    assert main(["sweep", "status", str(record.dir)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "slurm RUNNING" in out and "slurm PENDING (PartitionConfig)" in out
    assert "slurm REQUEUED (BeginTime)" in out
    cancelled = record.status(jobs["4242_3"])
    assert cancelled["status"] == "KILLED" and cancelled["slurm_state"] == "CANCELLED"
    assert "KILLED: slurm CANCELLED" in out
    for job in ("4242_0", "4242_1", "4242_2"):
        assert record.status(jobs[job])["status"] == "SUBMITTED"


def test_points_slurm_has_forgotten_end_failed(tmp_path, tmp_mlflow, fake_slurm):
    (tmp_path / "sweep.toml").write_text(SWEEP)
    host = make_host(toy_plugin)
    record, _, _ = submit_sweep(plan_sweep(tmp_path / "sweep.toml", host.registry, tmp_path / "sw"), host)
    by_job = {p["job_id"]: h for h, p in record.points.items()}
    assert {r["job_id"]: r.get("scheduler") for r in rows(record)} == dict.fromkeys(by_job)  # squeue down: no claim
    (tmp_path / "squeue.txt").write_text("4242_0  RUNNING  0  None\n")  # the others were purged long ago
    labels = {r["job_id"]: r.get("scheduler") for r in rows(record)}
    assert labels == {"4242_0": "RUNNING", "4242_1": "GONE", "4242_2": "GONE", "4242_3": "GONE"}
    assert record.status(by_job["4242_0"])["status"] == "SUBMITTED"
    for job in ("4242_1", "4242_2", "4242_3"):
        status = record.status(by_job[job])
        assert status["status"] == "FAILED" and "no longer knows job " + job in status["error"]


def test_task_state_labels():
    assert TaskState("PENDING", "PartitionConfig").label == "PENDING (PartitionConfig)"
    assert TaskState("PENDING", "BeginTime", restarts=1).label == "REQUEUED (BeginTime)"
    assert TaskState("RUNNING", "None").label == "RUNNING"
    assert TaskState("CANCELLED", "None").label == "CANCELLED" and TaskState("CANCELLED").ended
    assert not TaskState("PENDING").ended
