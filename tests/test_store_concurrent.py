"""Eight ``deepscope run`` processes on ONE fresh sqlite store all finish (the first use is locked)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from mlflow.tracking import MlflowClient

TESTS = Path(__file__).parent
N = 8
PIPELINE = textwrap.dedent("""
    [run]
    name = "concurrent"
    seed = {seed}
    [data]
    use = "tiny"
    [model]
    use = "tiny-mlp"
    [[stage]]
    do = "train"
    use = "sgd"
    epochs = 1
    [[stage]]
    do = "probe"
    use = "count"
""")


def test_eight_runs_on_one_fresh_sqlite_store_all_finish(tmp_path):
    db = tmp_path / "store" / "mlflow.db"
    assert not db.exists()  # a new file: no template copy, so every process may race to migrate it
    uri = f"sqlite:///{db}"
    env = {**os.environ, "PYTHONPATH": str(TESTS), "DEEPSCOPE_PLUGINS_MODULES": "toy_plugin",
           "MLFLOW_TRACKING_URI": uri}
    procs = []
    for seed in range(N):
        path = tmp_path / f"p{seed}.toml"
        path.write_text(PIPELINE.format(seed=seed))
        procs.append(subprocess.Popen([sys.executable, "-m", "deepscope.cli", "run", str(path)], env=env,
                                      cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in procs]
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("deepscope").experiment_id])
    assert len(runs) == N and {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.data.tags["deepscope.seed"] for r in runs) == sorted(str(s) for s in range(N))
    for r in runs:
        assert {"train/sgd/loss", "probe/count/params", "probe/count/epoch"} <= set(r.data.metrics), r.data.metrics
    assert not any(name.startswith("_alembic_tmp_") for name in table_names(db))


def table_names(db: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
