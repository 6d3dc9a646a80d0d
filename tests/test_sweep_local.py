"""The local executor for real: two worker processes, one fresh sqlite store, a parent and its children."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

import toy_plugin
from deepscope.cli import main
from deepscope.sweep.record import worker_owner
from deepscope.sweep.submit import plan_sweep, submit_sweep
from deepscope.testing import make_host

TESTS = Path(__file__).parent

SWEEP = """
[run]
name = "local"
seed = 0
experiment = "sweep-test"

[data]
use = "tiny"

[model]
use = "tiny-mlp"

[[stage]]
do = "train"
use = "sgd"
epochs = 2

[[stage]]
do = "attack"
use = "shift"
n_examples = 16

[sweep]
executor = "local"
workers = 2
metrics = ["attack/shift/robust_acc"]

[sweep.grid]
"stage.1.eps" = [0.0, 0.3]
"run.seed" = [0, 1]
"""


def _worker_env(monkeypatch, tmp_path):
    """Worker processes that find the toy plugin, on one thread, with the store in tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("DEEPSCOPE_PLUGINS_MODULES", "toy_plugin")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_local_sweep_with_two_processes_on_one_fresh_store(tmp_path, monkeypatch, capsys):
    _worker_env(monkeypatch, tmp_path)
    (tmp_path / "sweep.toml").write_text(SWEEP)
    host = make_host(toy_plugin)
    plan = plan_sweep(tmp_path / "sweep.toml", host.registry)
    record, started, skipped = submit_sweep(plan, host)  # the store does not exist yet: the sweep creates it
    assert len(started) == 4 and not skipped

    uri = record.data["tracking_uri"]
    assert uri == f"sqlite:///{tmp_path / 'mlflow.db'}?timeout=60"
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(record.data["parent_run_id"])
    assert parent.info.status == "FINISHED"
    exp = client.get_experiment_by_name("sweep-test")
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
    statuses = {h: record.status(h) for h in record.points}
    assert {s["run_id"] for s in statuses.values()} == {c.info.run_id for c in children}
    assert len({s["pid"] for s in statuses.values()}) == 2  # both processes ran points, into one store
    by_hash = {c.data.tags["deepscope.sweep.hash"]: c for c in children}
    for digest, point in record.points.items():
        child = by_hash[digest]
        assert child.data.params["stage.1.eps"] == str(point["values"]["stage.1.eps"])
        assert child.data.params["run.seed"] == str(point["values"]["run.seed"])
        assert child.data.metrics["attack/shift/robust_acc"] == statuses[digest]["metrics"]["attack/shift/robust_acc"]
        assert child.data.metrics["attack/shift/max_linf"] <= point["values"]["stage.1.eps"] + 1e-6
    assert json.loads((tmp_path / "sweeps/local/sweep.json").read_text())["parent_run_id"] == parent.info.run_id

    # submitting again recognizes every point and runs nothing
    again, started, skipped = submit_sweep(plan_sweep(tmp_path / "sweep.toml", host.registry), host)
    assert not started and len(skipped) == 4
    assert len(client.search_runs([exp.experiment_id])) == 4 + 1  # the children and their parent

    # status and collect reattach from the directory alone
    capsys.readouterr()
    monkeypatch.setenv("COLUMNS", "250")  # rich: one line per row
    assert main(["sweep", "status", "sweeps/local"]) == 0
    out = capsys.readouterr().out  # the status table is the result: stdout
    assert "4 points: 4 FINISHED" in out and "robust_acc" in out
    assert main(["sweep", "collect", "sweeps/local", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"FINISHED"}
    for r in rows:
        assert float(r["attack/shift/robust_acc"]) == by_hash[r["hash"]].data.metrics["attack/shift/robust_acc"]
    assert (tmp_path / "sweeps/local/results.csv").exists()


def test_status_of_a_directory_that_is_not_a_sweep_exits_2(tmp_path, capsys):
    assert main(["sweep", "status", str(tmp_path)]) == 2
    assert "not a sweep directory" in capsys.readouterr().err


def test_workers_that_cannot_start_fail_the_sweep_and_close_its_parent(tmp_path, monkeypatch, capsys):
    # a plugin that imports in the submitting process but not in the workers
    (tmp_path / "worker_only_broken.py").write_text(
        "import sys\n"
        "if sys.argv[0].endswith('worker.py'):\n"
        "    raise ImportError('broken only inside sweep workers')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("DEEPSCOPE_PLUGINS_MODULES", "toy_plugin,worker_only_broken")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "sweep.toml").write_text(SWEEP.replace('"run.seed" = [0, 1]', '"run.seed" = [0]'))
    from deepscope.plugins import set_host

    set_host(make_host(toy_plugin))
    try:
        assert main(["sweep", str(tmp_path / "sweep.toml")]) == 1
    finally:
        set_host(None)
    record_dir = tmp_path / "sweeps" / "local"
    statuses = [json.loads(p.read_text()) for p in (record_dir / "points").glob("*.json")]
    assert len(statuses) == 2 and {s["status"] for s in statuses} == {"FAILED"}
    assert all("no worker ran this point" in s["error"] for s in statuses)
    sweep = json.loads((record_dir / "sweep.json").read_text())
    client = MlflowClient(tracking_uri=sweep["tracking_uri"])
    assert client.get_run(sweep["parent_run_id"]).info.status == "FAILED"


def _claim(record_dir: Path, digest: str, owner: str) -> None:
    (record_dir / "claims").mkdir(parents=True, exist_ok=True)
    (record_dir / "claims" / digest).write_text(owner)


def test_a_second_sweep_leaves_the_points_live_workers_hold_and_takes_over_stale_claims(tmp_path, monkeypatch):
    """Two `deepscope sweep` invocations on one directory: a point claimed by a live process (this test,
    standing in for the first invocation's worker) is neither run nor marked; a claim whose process is
    gone is released and its point runs; the parent run ends only when every point has."""
    _worker_env(monkeypatch, tmp_path)
    (tmp_path / "sweep.toml").write_text(SWEEP.replace('"run.seed" = [0, 1]', '"run.seed" = [0]'))
    host = make_host(toy_plugin)
    plan = plan_sweep(tmp_path / "sweep.toml", host.registry)
    live, stale = plan.points[0].hash, plan.points[1].hash
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()  # a pid whose process has exited
    record_dir = tmp_path / "sweeps" / "local"
    _claim(record_dir, live, worker_owner(os.getpid()))
    _claim(record_dir, stale, worker_owner(gone))

    record, started, _ = submit_sweep(plan, host)
    assert set(started) == {live, stale}
    assert record.status(live) == {"status": "PENDING"}  # not run, and not marked FAILED or KILLED
    assert record.status(stale)["status"] == "FINISHED"
    assert (record_dir / "claims" / live).read_text() == worker_owner(os.getpid())
    client = MlflowClient(tracking_uri=record.data["tracking_uri"])
    assert client.get_run(record.data["parent_run_id"]).info.status == "RUNNING"

    _claim(record_dir, live, worker_owner(gone))  # the other invocation died with it
    again, started, skipped = submit_sweep(plan_sweep(tmp_path / "sweep.toml", host.registry), host)
    assert started == [live] and skipped == [stale]
    assert again.status(live)["status"] == "FINISHED"
    assert client.get_run(again.data["parent_run_id"]).info.status == "FINISHED"


def test_a_claim_owner_is_alive_while_its_process_runs_and_not_once_it_exits_even_unreaped():
    from deepscope.sweep.record import owner_alive

    assert owner_alive(worker_owner(os.getpid()))
    assert owner_alive(f"some-other-host:{os.getpid() + 10**6}")  # cannot be checked from here: kept
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    if Path("/proc/self/stat").exists():  # Linux shows the exited-but-unreaped (zombie) state
        stat, deadline = Path(f"/proc/{child.pid}/stat"), time.monotonic() + 30
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not owner_alive(worker_owner(child.pid))
    child.wait()
    assert not owner_alive(worker_owner(child.pid))


def test_a_claim_is_taken_once_with_its_owner_written_and_leaves_no_temporary_file(tmp_path):
    from deepscope.sweep.record import SweepRecord

    record = SweepRecord.create_or_open(tmp_path, name="c", file="f.toml", executor="local", workers=1,
                                        tracking_uri="sqlite:///x.db", experiment="e", keys=[], metrics=[],
                                        collect={})
    assert record.claim("abc", "host:1") and not record.claim("abc", "host:2")
    assert record.claim_owner("abc") == "host:1"
    assert sorted(p.name for p in (tmp_path / "claims").iterdir()) == ["abc"]
