"""The inline executor, and a point that crashed resuming in its own run when submitted again."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

import resume_toy_plugin
import toy_plugin
from deepscope.config import parse_pipeline
from deepscope.hookspecs import hookimpl
from deepscope.runner import run_pipeline
from deepscope.sweep.submit import plan_sweep, submit_sweep
from deepscope.testing import make_host

SWEEP = """
[run]
name = "crashy"
seed = 4
checkpoint_every = 1

[data]
use = "tiny"

[model]
use = "tiny-mlp"

[[stage]]
do = "train"
use = "resumable"
epochs = 4

[sweep]
executor = "inline"

[sweep.grid]
"stage.0.lr" = [0.1, 0.3]
"""


class CrashAtEpoch3:
    """Raises (a node failure, say) right after the first run logs its third epoch."""

    def __init__(self):
        self.armed = True

    @hookimpl
    def deepscope_metrics_logged(self, run, metrics, step):
        if self.armed and step == 3 and "train/resumable/loss" in metrics:
            self.armed = False
            raise RuntimeError("node lost")


def test_a_crashed_point_resumes_in_its_run_when_the_sweep_is_submitted_again(tmp_path, tmp_mlflow):
    (tmp_path / "s.toml").write_text(SWEEP)
    host = make_host(toy_plugin, resume_toy_plugin, CrashAtEpoch3())
    plan = plan_sweep(tmp_path / "s.toml", host.registry, tmp_path / "sw")
    record, started, _ = submit_sweep(plan, host)
    first, second = (p.hash for p in plan.points)
    assert record.status(first)["status"] == "FAILED" and "node lost" in record.status(first)["error"]
    assert record.status(second)["status"] == "FINISHED"
    client = MlflowClient(tracking_uri=tmp_mlflow)
    assert client.get_run(record.data["parent_run_id"]).info.status == "FAILED"
    crashed_run = record.status(first)["run_id"]

    record, started, skipped = submit_sweep(plan_sweep(tmp_path / "s.toml", host.registry, tmp_path / "sw"), host)
    assert started == [first] and skipped == [second]
    status = record.status(first)
    assert status["status"] == "FINISHED" and status["resumed"] and status["run_id"] == crashed_run
    assert client.get_run(record.data["parent_run_id"]).info.status == "FINISHED"

    # the resumed point ends exactly where an uninterrupted run of the same config ends
    clean = make_host(toy_plugin, resume_toy_plugin)
    text = record.config_path(first).read_text()
    reference = run_pipeline(parse_pipeline(text, clean.registry), clean, tracking_uri=tmp_mlflow)
    assert status["metrics"] == pytest.approx(reference.metrics, rel=0, abs=0)
    history = sorted((m.step, m.value) for m in client.get_metric_history(crashed_run, "train/resumable/loss"))
    expected = sorted((m.step, m.value) for m in client.get_metric_history(reference.run_id, "train/resumable/loss"))
    assert history == expected and [s for s, _ in history] == [1, 2, 3, 4]
