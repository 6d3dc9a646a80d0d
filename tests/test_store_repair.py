"""`deepscope repair-store`: a store left half-migrated (leftover _alembic_tmp_* tables) is repaired, runs kept."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from deepscope.cli import main
from deepscope.testing import template_db
from deepscope.tracking import Tracker, repair_store

#: the newest MLflow migration that rebuilds a table in batch mode on sqlite (via _alembic_tmp_experiment_tags),
#: and the revision before it: a store stamped there re-runs it on its next use
BATCH_MIGRATION, BEFORE_IT = "17e22815139b", "1971f2d9a75b"


def tables(db: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def store_with_runs(tmp_path: Path, n: int = 3) -> tuple[str, Path, dict]:
    """A migrated copy holding ``n`` finished runs, each with a param, a tag and a metric history."""
    db = tmp_path / "mlflow.db"
    shutil.copy(template_db(), db)
    uri = f"sqlite:///{db}"
    tracker = Tracker(uri, "deepscope")
    expected = {}
    for i in range(n):
        run_id = tracker.start(f"run{i}", {"deepscope.seed": str(i)})
        tracker.log_params({"lr": 0.1 * (i + 1)})
        for step in range(3):
            tracker.log_metrics({"loss": float(i + step)}, step)
        tracker.finish("FINISHED")
        expected[run_id] = i
    return uri, db, expected


def break_it(db: Path) -> None:
    """What a race leaves: the schema stamped mid-way and the batch migration's temporary copies."""
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config

    command.downgrade(_get_alembic_config(f"sqlite:///{db}"), BEFORE_IT)
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("CREATE TABLE _alembic_tmp_experiment_tags AS SELECT * FROM experiment_tags")
        conn.execute("CREATE TABLE _alembic_tmp_tags AS SELECT * FROM tags")


def check_runs(uri: str, expected: dict) -> None:
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("deepscope").experiment_id])
    assert {r.info.run_id for r in runs} == set(expected)
    for r in runs:
        i = expected[r.info.run_id]
        assert r.info.status == "FINISHED" and r.data.tags["deepscope.seed"] == str(i)
        assert r.data.params["lr"] == str(0.1 * (i + 1))
        assert [m.value for m in client.get_metric_history(r.info.run_id, "loss")] == [i, i + 1.0, i + 2.0]


def test_a_broken_store_fails_every_client_until_repaired(tmp_path):
    uri, db, expected = store_with_runs(tmp_path)
    break_it(db)
    fresh = uri + "?timeout=5"  # a URI MLflow has not cached a store for in this process
    with pytest.raises(Exception, match="_alembic_tmp_experiment_tags already exists"):
        MlflowClient(fresh).search_experiments()
    report = repair_store(uri)
    assert report == {"dropped": ["_alembic_tmp_experiment_tags", "_alembic_tmp_tags"], "restored": [],
                      "runs": len(expected)}
    assert not {t for t in tables(db) if t.startswith("_alembic_tmp_")}
    check_runs(uri + "?timeout=6", expected)


def test_a_table_the_migration_had_dropped_is_restored_from_its_copy(tmp_path):
    uri, db, expected = store_with_runs(tmp_path)
    break_it(db)
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:  # killed after DROP, before RENAME
        conn.execute("DROP TABLE _alembic_tmp_tags")
        conn.execute("ALTER TABLE tags RENAME TO _alembic_tmp_tags")
    report = repair_store(uri)
    assert report["restored"] == ["tags"] and report["dropped"] == ["_alembic_tmp_experiment_tags"]
    check_runs(uri + "?timeout=7", expected)


def test_the_command_repairs_and_says_what_it_kept(tmp_path, capsys):
    uri, db, expected = store_with_runs(tmp_path, n=2)
    break_it(db)
    assert main(["repair-store", str(db)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "dropped _alembic_tmp_experiment_tags, _alembic_tmp_tags" in out and "2 runs kept" in out
    check_runs(uri + "?timeout=8", expected)


def test_the_command_refuses_what_is_not_a_sqlite_store(tmp_path, capsys):
    assert main(["repair-store", str(tmp_path / "missing.db")]) == 2
    assert "no sqlite store at" in capsys.readouterr().err
    assert main(["repair-store", "http://127.0.0.1:5000"]) == 2
    assert "sqlite" in capsys.readouterr().err
