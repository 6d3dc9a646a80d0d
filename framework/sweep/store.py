"""The MLflow side of a sweep: one store, its experiments and the parent run, made before fan-out.

Several processes opening a *fresh* sqlite store at once race on its schema
migration (alembic) and most of them fail; so the submitting command creates
the database, every experiment the points use and the parent run first, and
the workers only ever open a migrated store. MLflow 3.17 already runs
``PRAGMA busy_timeout = 20000`` in each of its sessions; sqlite URIs here also
get ``?timeout=60`` (SQLAlchemy passes it to ``sqlite3.connect``), which covers
the statements MLflow runs on a connection before that pragma. On a cluster,
prefer an ``mlflow server`` (see docs/sweeps.md): sqlite locking on NFS is
unreliable.
"""

from __future__ import annotations

from typing import Iterable

SQLITE_TIMEOUT_S = 60


def with_busy_timeout(uri: str, seconds: int = SQLITE_TIMEOUT_S) -> str:
    """``sqlite:///x.db`` -> ``sqlite:///x.db?timeout=60``; other URIs unchanged."""
    if uri.startswith("sqlite:///") and "?" not in uri:
        return f"{uri}?timeout={seconds}"
    return uri


def prepare_store(uri: str, experiments: Iterable[str], parent_experiment: str, parent_name: str,
                  tags: dict[str, str], parent_run_id: str | None = None) -> str:
    """Create the store, every experiment and the parent run (or reopen it); return the parent's run id."""
    from ..tracking import Tracker

    for name in dict.fromkeys(experiments):
        Tracker(uri, name)
    tracker = Tracker(uri, parent_experiment)
    if parent_run_id is not None:
        return tracker.start(parent_name, {}, run_id=parent_run_id)
    return tracker.start(parent_name, tags)


def finish_parent(uri: str, run_id: str, statuses: Iterable[str]) -> str:
    """Mark the parent FINISHED when every point finished, else FAILED; return that status."""
    from mlflow.tracking import MlflowClient

    status = "FINISHED" if all(s == "FINISHED" for s in statuses) else "FAILED"
    MlflowClient(tracking_uri=uri).set_terminated(run_id, status=status)
    return status


def log_parent_files(uri: str, run_id: str, paths: Iterable[str], artifact_path: str = "collect") -> None:
    """Attach files (the collected table and plot) to the sweep's parent run, finished or not."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path=artifact_path)
