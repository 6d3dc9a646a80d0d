"""MLflow tracking: one run per pipeline, through ``MlflowClient`` with explicit ids.

The fluent API keeps global active-run state that leaks between runs and
tests, so everything here names its run id. The default store is
``sqlite:///mlflow.db`` in the working directory, with artifacts in
``mlartifacts/`` beside it (set explicitly: MLflow would otherwise put them
relative to whatever the cwd is later).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Mapping

DEFAULT_DB = "mlflow.db"
#: MLflow 3 shows an experiment tagged this way as training runs (its runs table), not as a GenAI app
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def resolve_tracking_uri(configured: str | None = None) -> str:
    """``[run] tracking_uri`` > ``MLFLOW_TRACKING_URI`` > ``sqlite:///<cwd>/mlflow.db``."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        uri = f"sqlite:///{(Path.cwd() / DEFAULT_DB).resolve()}"
    return uri


def sqlite_path(uri: str | None) -> Path | None:
    """The database file of a ``sqlite:///`` URI (query such as ``?timeout=60`` removed), else None."""
    if not uri or not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):].split("?", 1)[0])


def artifact_root_for(uri: str) -> str | None:
    """Where artifacts of a local sqlite store go (beside the database); None for servers."""
    db = sqlite_path(uri)
    if db is None:
        return None
    return (db.parent.resolve() / "mlartifacts").as_uri()


@contextlib.contextmanager
def store_lock(db: Path | None) -> Iterator[None]:
    """Hold an exclusive lock on ``<db>.lock`` beside a sqlite database (nothing for other stores).

    MLflow creates and migrates a sqlite schema on a client's first use of the file, without a lock
    of its own: processes that open one fresh database at once interleave the alembic steps
    (``table _alembic_tmp_tags already exists``) and leave it broken. Every first use here
    (:class:`Tracker`, :func:`repair_store`) takes this lock, so one process migrates and the others
    then find a finished schema. ``flock`` is advisory and POSIX-only; on NFS prefer a server.
    """
    if db is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # Windows: no flock; MLflow's own behaviour
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.parent / f"{db.name}.lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class Tracker:
    """Logs one pipeline run to MLflow."""

    def __init__(self, uri: str, experiment: str):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        with store_lock(sqlite_path(uri)):  # the first touch of a sqlite store may create and migrate it
            self.client = MlflowClient(tracking_uri=uri)
            self.experiment_id = self._experiment(experiment)
        self.run_id: str | None = None

    def _experiment(self, name: str) -> str:
        exp_id = self._find_or_create_experiment(name)
        exp = self.client.get_experiment(exp_id)
        if EXPERIMENT_KIND_TAG not in (exp.tags or {}):  # MLflow 3 opens untagged experiments in its GenAI view
            self.client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp_id

    def _find_or_create_experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":  # deleted in the UI: bring it back rather than fail later
                self.client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        root = artifact_root_for(self.uri)
        location = f"{root}/{name}" if root else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except Exception:  # created concurrently by another process
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def start(self, run_name: str, tags: dict[str, str], run_id: str | None = None) -> str:
        if run_id is not None:  # resume an existing run
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        return self.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def log_bytes(self, artifact_path: str, data: bytes) -> None:
        import tempfile

        directory, _, filename = artifact_path.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / filename
            path.write_bytes(data)
            self.client.log_artifact(self.run_id, str(path), artifact_path=directory or None)

    def finish(self, status: str) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)


class MetricLedger:
    """Wraps the tracker: counts values logged per key, and on resume drops the ones already in MLflow.

    A run killed after its last checkpoint has logged some metrics that the
    resumed run recomputes. The checkpoint says how many values of each key
    were logged when it was written; MLflow's history beyond that count is the
    "replay window", and exactly those (key, step) entries are skipped once
    each when logged again. Steps of one key never decrease in deepscope, so
    the first ``count`` values in step order are the ones before the checkpoint.
    """

    def __init__(self, tracker: Any):
        self.tracker = tracker
        self.counts: Counter = Counter()
        self.replay: Counter = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tracker, name)

    def start_replay(self, counts_at_checkpoint: Mapping[str, int]) -> None:
        client, run_id = self.tracker.client, self.tracker.run_id
        self.counts = Counter({k: int(v) for k, v in counts_at_checkpoint.items()})
        self.replay = Counter()
        for key in client.get_run(run_id).data.metrics:
            history = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
            for m in history[self.counts.get(key, 0):]:
                self.replay[(key, int(m.step))] += 1

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        fresh = {}
        for key, value in metrics.items():
            self.counts[key] += 1
            if self.replay.get((key, int(step)), 0) > 0:
                self.replay[(key, int(step))] -= 1
                continue
            fresh[key] = value
        if fresh:
            self.tracker.log_metrics(fresh, step)


def repair_store(uri: str) -> dict[str, Any]:
    """Repair a sqlite store left half-migrated by concurrent first use, keeping every run.

    A migration interrupted on sqlite leaves alembic's ``_alembic_tmp_<table>`` copies behind, and
    every later client fails on them (``table _alembic_tmp_tags already exists``). Each leftover is
    dropped when its table still exists, or renamed back when the migration had already dropped the
    table (then it holds the only copy of the rows); MLflow then finishes the migration. Returns
    what was done: ``dropped``, ``restored`` (table names) and ``runs`` (how many the store holds).
    """
    import sqlite3

    from .errors import DeepscopeError

    db = sqlite_path(uri)
    if db is None:
        raise DeepscopeError(f"repair-store works on sqlite stores (sqlite:///path/to/mlflow.db); got {uri!r}")
    if not db.is_file():
        raise DeepscopeError(f"no sqlite store at {db}; pass the store's URI or path, e.g. "
                             "`deepscope repair-store sqlite:///mlflow.db`")
    with store_lock(db):
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            dropped, restored = [], []
            for tmp in sorted(t for t in tables if t.startswith("_alembic_tmp_")):
                original = tmp[len("_alembic_tmp_"):]
                if original in tables:
                    conn.execute(f'DROP TABLE "{tmp}"')
                    dropped.append(tmp)
                else:
                    conn.execute(f'ALTER TABLE "{tmp}" RENAME TO "{original}"')
                    restored.append(original)
        _finish_migration(db)
        with contextlib.closing(sqlite3.connect(db)) as conn:
            runs = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    return {"dropped": dropped, "restored": restored, "runs": int(runs)}


def _finish_migration(db: Path) -> None:
    """Create missing tables and upgrade the schema to MLflow's head (``mlflow db upgrade``), then check it."""
    import sqlalchemy
    from mlflow.store.db import utils

    engine = sqlalchemy.create_engine(f"sqlite:///{db}")
    try:
        if not utils._all_tables_exist(engine):
            utils._initialize_tables(engine)
        else:
            utils._upgrade_db(engine)
        utils._verify_schema(engine)
    finally:
        engine.dispose()
