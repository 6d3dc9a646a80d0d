"""Runs sweep points: in this process (``inline``), or as ``python -m deepscope.sweep.worker DIR HASH...``.

A worker process loads every installed plugin, plus the modules named in
``DEEPSCOPE_PLUGINS_MODULES`` (comma-separated, importable from ``PYTHONPATH``;
handy for tests and for plugins that are not installed). With several hashes
it claims them one by one (a claim file per point, created atomically), so N workers given
the same list share it without a coordinator.

A point whose status file names an unfinished run with a checkpoint is
*resumed* in that MLflow run: this is how a requeued SLURM job, or a sweep
submitted again after a crash, continues where it stopped.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from ..errors import DeepscopeError, RunFailed
from ..hookspecs import hookimpl
from .record import SweepRecord, worker_owner

def worker_host() -> Any:
    """A fresh host per worker process (plugin managers cannot be pickled)."""
    from ..plugins import PluginHost

    return PluginHost()


def job_id_from_env() -> str | None:
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    return os.environ.get("SLURM_JOB_ID")


class _StatusWriter:
    """Writes RUNNING and the run id into the point's status file as soon as the run exists."""

    def __init__(self, record: SweepRecord, digest: str, job_id: str | None):
        self.record, self.digest, self.job_id = record, digest, job_id

    @hookimpl
    def deepscope_run_started(self, run):
        run_id = run.tracker.run_id if run.tracker is not None else None
        self.record.write_status(self.digest, status="RUNNING", run_id=run_id, job_id=self.job_id,
                                 host=socket.gethostname(), pid=os.getpid(), error=None)


def run_point(record: SweepRecord, digest: str, host: Any, console: Any = None) -> str:
    """Run (or resume) one point; return its final status. Never raises for a failed run."""
    from ..checkpoint import checkpoint_path
    from ..config import load_pipeline
    from ..runner import run_pipeline

    uri = record.data["tracking_uri"]
    before = record.status(digest)
    previous = before.get("run_id")
    resume = None
    if previous and before.get("status") != "FINISHED" and checkpoint_path(uri, previous).exists():
        resume = previous
    job_id = job_id_from_env() or record.points[digest].get("job_id")
    if job_id and str(job_id).startswith("local:"):
        job_id = f"local:{os.getpid()}"  # the worker process that took the point
    tags = {"mlflow.parentRunId": record.data["parent_run_id"], "deepscope.sweep.hash": digest,
            "deepscope.sweep.dir": str(record.dir)}
    if job_id:
        tags["deepscope.job_id"] = str(job_id)
    writer = _StatusWriter(record, digest, job_id)
    name = f"deepscope-sweep-status-{digest}"
    host.register(writer, name=name)
    try:
        pipeline = load_pipeline(record.config_path(digest), host.registry)
        result = run_pipeline(pipeline, host, console=console, tracking_uri=uri, extra_tags=tags,
                              resume_run_id=resume)
    except KeyboardInterrupt:
        record.write_status(digest, status="KILLED")
        raise
    except (DeepscopeError, RunFailed) as exc:
        record.write_status(digest, status="FAILED", error=str(exc))
        return "FAILED"
    finally:
        host.unregister(name)
    record.write_status(digest, status="FINISHED", run_id=result.run_id, metrics=result.metrics, resumed=bool(resume))
    return "FINISHED"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print("usage: python -m deepscope.sweep.worker SWEEP_DIR HASH [HASH ...]", file=sys.stderr)
        return 2
    from ..runner import sigterm_as_interrupt

    sigterm_as_interrupt()
    record = SweepRecord.open(args[0])
    host = worker_host()
    owner = worker_owner(os.getpid())
    failed = 0
    for digest in args[1:]:
        if record.claim(digest, owner):
            print(f"[{owner}] point {digest}", flush=True)
            failed += run_point(record, digest, host) != "FINISHED"
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
