"""The sweep's MLflow store: created before fan-out, then shared by concurrent writer processes."""

from __future__ import annotations

import subprocess
import sys

from mlflow.tracking import MlflowClient

from deepscope.sweep.store import prepare_store, with_busy_timeout

WRITER = """
import sys
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
uri, exp, parent, n, me = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
client = MlflowClient(tracking_uri=uri)
run = client.create_run(exp, run_name=me, tags={"mlflow.parentRunId": parent})
for step in range(n):  # one transaction per value: as many write locks as possible
    client.log_metric(run.info.run_id, "x", float(step), step=step)
client.log_batch(run.info.run_id, metrics=[Metric("y", float(i), 0, i) for i in range(n)])
client.set_terminated(run.info.run_id)
print(run.info.run_id)
"""


def test_busy_timeout_goes_on_sqlite_uris_only():
    assert with_busy_timeout("sqlite:////a/mlflow.db") == "sqlite:////a/mlflow.db?timeout=60"
    assert with_busy_timeout("sqlite:////a/mlflow.db?timeout=5") == "sqlite:////a/mlflow.db?timeout=5"
    assert with_busy_timeout("http://head-node:5000") == "http://head-node:5000"


def test_concurrent_writers_on_a_store_prepared_before_fan_out(tmp_path):
    uri = with_busy_timeout(f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}")  # does not exist yet
    parent = prepare_store(uri, ["a", "b"], "a", "sweep", {"deepscope.sweep": "parent"})
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("a").experiment_id
    assert client.get_experiment_by_name("b") is not None
    n, writers = 40, 3
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, uri, exp, parent, str(n), f"w{i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(writers)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * writers, [err[-1500:] for _, err in outputs]
    run_ids = [out.strip() for out, _ in outputs]
    for run_id in run_ids:
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent
        assert [m.value for m in sorted(client.get_metric_history(run_id, "x"), key=lambda m: m.step)] == \
            [float(s) for s in range(n)]
        assert len(client.get_metric_history(run_id, "y")) == n
    assert prepare_store(uri, ["a"], "a", "sweep", {}, parent_run_id=parent) == parent  # reopened, not duplicated
    assert client.get_run(parent).info.status == "RUNNING"
    assert len(client.search_runs([exp])) == writers + 1
