"""``sweep collect`` on a real sweep: the summary equals numpy over the child runs MLflow holds."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

import toy_plugin
from deepscope.cli import main
from deepscope.errors import ConfigError
from deepscope.sweep.submit import plan_sweep, submit_sweep
from deepscope.testing import make_host

SWEEP = """
[run]
name = "collect"
seed = 0
experiment = "collect-pipeline"

[data]
use = "tiny"

[model]
use = "tiny-mlp"

[[stage]]
do = "train"
use = "sgd"
epochs = 1

[sweep]
executor = "inline"

[sweep.grid]
"stage.0.lr" = [0.05, 0.5]
"run.seed" = [0, 1, 2]

[sweep.collect]
by = ["stage.0.lr"]
metrics = ["train/sgd/loss"]
x = "stage.0.lr"
log_x = true
"""


def test_collect_of_an_inline_sweep_matches_numpy_over_the_child_runs(tmp_path, tmp_mlflow, capsys):
    (tmp_path / "s.toml").write_text(SWEEP)
    host = make_host(toy_plugin)
    record, started, _ = submit_sweep(plan_sweep(tmp_path / "s.toml", host.registry, tmp_path / "sw"), host)
    assert len(started) == 6
    client = MlflowClient(tracking_uri=tmp_mlflow)
    parent = record.data["parent_run_id"]
    exp = client.get_experiment_by_name("collect-pipeline")
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    by_lr: dict[str, list[float]] = {}
    for child in children:
        by_lr.setdefault(child.data.params["stage.0.lr"], []).append(child.data.metrics["train/sgd/loss"])
    assert sorted(len(v) for v in by_lr.values()) == [3, 3]

    capsys.readouterr()
    assert main(["sweep", "collect", str(tmp_path / "sw"), "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["stage.0.lr"] for r in rows] == ["0.05", "0.5"]
    for r in rows:
        values = np.array(by_lr[r["stage.0.lr"]])
        assert float(r["train/sgd/loss/mean"]) == pytest.approx(values.mean(), rel=1e-12)
        assert float(r["train/sgd/loss/std"]) == pytest.approx(values.std(ddof=1), rel=1e-12)
        assert r["train/sgd/loss/count"] == "3"
    assert {a.path for a in client.list_artifacts(parent, "collect")} == {"collect/summary.csv",
                                                                          "collect/summary.png"}

    assert main(["sweep", "collect", str(tmp_path / "sw")]) == 0  # the rich table, without --csv
    assert "train/sgd/loss/mean" in capsys.readouterr().out


@pytest.mark.parametrize("table, message", [
    ('by = ["stage.0.lrr"]', "$.sweep.collect.by: 'stage.0.lrr' is not a swept key (did you mean 'stage.0.lr'?)"),
    ('by = ["stage.0.lr"]\nx = "run.seed"', "$.sweep.collect.x: the plot's x axis must be one of the by keys"),
    ('by = ["stage.0.lr"]\nlogx = true', "$.sweep.collect.logx: unknown key (did you mean 'log_x'?)"),
    ('x = "stage.0.lr"', "$.sweep.collect.by: name the swept keys to group by"),
])
def test_a_bad_collect_table_is_a_config_error_naming_its_key(tmp_path, table, message):
    text = SWEEP.split("[sweep.collect]")[0] + "[sweep.collect]\n" + table + "\n"
    (tmp_path / "s.toml").write_text(text)
    with pytest.raises(ConfigError) as err:
        plan_sweep(tmp_path / "s.toml", make_host(toy_plugin).registry, tmp_path / "sw")
    assert message in str(err.value)
