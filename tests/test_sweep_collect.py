"""``deepscope sweep collect --by``: grouped mean, std and count against numpy on the same points."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from deepscope.cli import main
from deepscope.sweep.aggregate import CollectSpec, group_points, summary_rows
from deepscope.sweep.plot import summary_figure
from deepscope.sweep.record import SweepRecord, write_json
from deepscope.tracking import Tracker

PRUNERS = ["snip", "synflow"]
COMPRESSIONS = [10, 100, 1000]
SEEDS = [0, 1, 2]
KEYS = ["stage.0.use", "stage.0.compression", "run.seed"]


def fake_sweep(directory: Path, uri: str, *, collect: dict | None = None) -> dict:
    """A sweep directory as workers leave it: random accuracies, one FAILED point, one without the metric."""
    rng = np.random.default_rng(7)
    parent = Tracker(uri, "collect-test").start("sweep fake", {"deepscope.sweep": "parent"})
    record = SweepRecord.create_or_open(directory, name="fake", file="fake.toml", executor="inline", workers=1,
                                        tracking_uri=uri, experiment="collect-test", keys=KEYS, metrics=[],
                                        collect=collect or {})
    record.data["parent_run_id"] = parent
    truth: dict = {}
    index = 0
    for pruner in PRUNERS:
        for compression in COMPRESSIONS:
            for seed in SEEDS:
                digest = f"{index:012x}"
                values = {"stage.0.use": pruner, "stage.0.compression": compression, "run.seed": seed}
                record.add_point(digest, index, values, "")
                acc, loss = float(rng.uniform(0.1, 0.9)), float(rng.uniform(0, 3))
                status, metrics = "FINISHED", {"test/acc": acc, "test/loss": loss}
                if (pruner, compression, seed) == ("snip", 100, 1):
                    status, metrics = "FAILED", {"test/acc": 0.0}  # a failed point never counts
                if (pruner, compression, seed) == ("synflow", 1000, 2):
                    metrics = {"test/loss": loss}  # finished without the metric
                record.write_status(digest, status=status, run_id="", metrics=metrics)
                if status == "FINISHED" and "test/acc" in metrics:
                    truth.setdefault((pruner, compression), []).append(acc)
                index += 1
    record.save()
    return truth


def read_csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_collect_by_two_keys_gives_numpy_mean_std_and_count_and_logs_to_the_parent(tmp_path, tmp_mlflow, capsys):
    truth = fake_sweep(tmp_path / "sw", tmp_mlflow)
    args = ["sweep", "collect", str(tmp_path / "sw"), "--by", "stage.0.use,stage.0.compression",
            "--metric", "test/acc", "--x", "stage.0.compression", "--log-x", "--csv"]
    capsys.readouterr()
    assert main(args) == 0
    rows = read_csv(capsys.readouterr().out)
    assert [(r["stage.0.use"], int(r["stage.0.compression"])) for r in rows] == \
        [(p, c) for p in PRUNERS for c in COMPRESSIONS]
    for r in rows:
        values = np.array(truth[(r["stage.0.use"], int(r["stage.0.compression"]))])
        assert int(r["test/acc/count"]) == len(values)
        assert float(r["test/acc/mean"]) == pytest.approx(values.mean(), rel=1e-12)
        assert float(r["test/acc/std"]) == pytest.approx(values.std(ddof=1), rel=1e-12)
    counts = {(r["stage.0.use"], r["stage.0.compression"]): int(r["test/acc/count"]) for r in rows}
    assert counts[("snip", "100")] == 2 and counts[("synflow", "1000")] == 2 and counts[("snip", "10")] == 3

    summary = (tmp_path / "sw/summary.csv").read_text()
    png = (tmp_path / "sw/summary.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((tmp_path / "sw/sweep.json").read_text())
    client = MlflowClient(tracking_uri=tmp_mlflow)
    logged = {a.path for a in client.list_artifacts(record["parent_run_id"], "collect")}
    assert logged == {"collect/summary.csv", "collect/summary.png"}
    local = client.download_artifacts(record["parent_run_id"], "collect/summary.csv", str(tmp_path / "dl"))
    assert Path(local).read_text() == summary


def test_grouping_by_one_key_aggregates_over_the_other_two(tmp_path, tmp_mlflow, capsys):
    truth = fake_sweep(tmp_path / "sw", tmp_mlflow)
    capsys.readouterr()
    assert main(["sweep", "collect", str(tmp_path / "sw"), "--by", "stage.0.use", "--metric", "test/acc",
                 "--metric", "test/loss", "--csv"]) == 0
    rows = read_csv(capsys.readouterr().out)
    assert [r["stage.0.use"] for r in rows] == PRUNERS
    for r in rows:
        values = np.concatenate([truth[(r["stage.0.use"], c)] for c in COMPRESSIONS])
        assert int(r["test/acc/count"]) == len(values) == 8
        assert float(r["test/acc/mean"]) == pytest.approx(values.mean(), rel=1e-12)
        assert float(r["test/acc/std"]) == pytest.approx(values.std(ddof=1), rel=1e-12)
        assert int(r["test/loss/count"]) == 8 + (r["stage.0.use"] == "synflow")  # the point without acc has a loss
    assert not (tmp_path / "sw/summary.png").exists()  # no --x, no plot


def test_infinite_values_are_counted_apart_and_left_out_of_mean_and_std(tmp_path, tmp_mlflow, capsys):
    """A disconnected network's effective compression is inf: the group's mean is over the finite seeds,
    and a column says how many were not finite (only for a metric that has any)."""
    truth = fake_sweep(tmp_path / "sw", tmp_mlflow)
    record = SweepRecord.create_or_open(tmp_path / "sw")
    status = record.status("000000000000")  # snip, 10, seed 0
    record.write_status("000000000000", status="FINISHED", run_id="",
                        metrics={**status["metrics"], "test/acc": float("inf")})
    capsys.readouterr()
    assert main(["sweep", "collect", str(tmp_path / "sw"), "--by", "stage.0.use,stage.0.compression",
                 "--metric", "test/acc", "--metric", "test/loss", "--csv"]) == 0
    rows = read_csv(capsys.readouterr().out)
    assert "test/acc/infinite" in rows[0] and "test/loss/infinite" not in rows[0]
    first = rows[0]
    assert (first["stage.0.use"], first["stage.0.compression"]) == ("snip", "10")
    finite = np.array(truth[("snip", 10)][1:])  # seeds 1 and 2
    assert first["test/acc/count"] == "2" and first["test/acc/infinite"] == "1"
    assert float(first["test/acc/mean"]) == pytest.approx(finite.mean(), rel=1e-12)
    assert float(first["test/acc/std"]) == pytest.approx(finite.std(ddof=1), rel=1e-12)
    assert all(r["test/acc/infinite"] == "0" for r in rows[1:])


def test_collect_without_by_aggregates_every_finished_point_into_one_row(tmp_path, tmp_mlflow, capsys):
    """A sweep over seeds only (nothing else to group by): one row, the mean over all finished points."""
    truth = fake_sweep(tmp_path / "sw", tmp_mlflow)
    capsys.readouterr()
    assert main(["sweep", "collect", str(tmp_path / "sw"), "--metric", "test/acc", "--csv"]) == 0
    (row,) = read_csv(capsys.readouterr().out)
    every = np.array([v for values in truth.values() for v in values])
    assert int(row["test/acc/count"]) == len(every) == 16
    assert float(row["test/acc/mean"]) == pytest.approx(every.mean(), rel=1e-12)
    assert float(row["test/acc/std"]) == pytest.approx(every.std(ddof=1), rel=1e-12)
    fake_sweep(tmp_path / "sw2", tmp_mlflow, collect={"metrics": ["test/acc"]})  # the same from [sweep.collect]
    capsys.readouterr()
    assert main(["sweep", "collect", str(tmp_path / "sw2"), "--csv"]) == 0
    assert read_csv(capsys.readouterr().out)[0]["test/acc/mean"] == row["test/acc/mean"]


def test_the_sweep_files_collect_table_is_the_default_and_a_group_of_one_has_no_std(tmp_path, tmp_mlflow, capsys):
    fake_sweep(tmp_path / "sw", tmp_mlflow, collect={"by": KEYS, "metrics": ["test/acc"], "x": "run.seed"})
    capsys.readouterr()
    assert main(["sweep", "collect", str(tmp_path / "sw"), "--csv"]) == 0
    rows = read_csv(capsys.readouterr().out)
    assert len(rows) == 18
    failed = [r for r in rows if (r["stage.0.use"], r["stage.0.compression"], r["run.seed"]) == ("snip", "100", "1")]
    assert failed[0]["test/acc/count"] == "0" and failed[0]["test/acc/mean"] == "" and failed[0]["test/acc/std"] == ""
    single = [r for r in rows if r["test/acc/count"] == "1"]
    assert len(single) == 16 and all(r["test/acc/std"] == "" for r in single)
    assert (tmp_path / "sw/summary.png").exists()


def test_the_plot_draws_one_line_per_group_with_the_means_and_stds(tmp_path, tmp_mlflow):
    truth = fake_sweep(tmp_path / "sw", tmp_mlflow)
    record = SweepRecord.open(tmp_path / "sw")
    from deepscope.sweep.report import rows as point_rows

    spec = CollectSpec(["stage.0.use", "stage.0.compression"], ["test/acc"], x="stage.0.compression", log_x=True)
    fig = summary_figure(spec, summary_rows(spec, group_points(spec, point_rows(record))))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and len(ax.containers) == 2
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["use=snip", "use=synflow"]
    for pruner, container in zip(PRUNERS, ax.containers):
        line, _, (bars,) = container
        assert list(line.get_xdata()) == COMPRESSIONS
        means = [np.mean(truth[(pruner, c)]) for c in COMPRESSIONS]
        stds = [np.std(truth[(pruner, c)], ddof=1) for c in COMPRESSIONS]
        assert np.allclose(line.get_ydata(), means, rtol=1e-12)
        spans = [seg[1, 1] - seg[0, 1] for seg in bars.get_segments()]
        assert np.allclose(spans, 2 * np.array(stds), rtol=1e-9)


@pytest.mark.parametrize("extra, message", [
    (["--by", "stage.0.usse"], "collect --by 'stage.0.usse': not a swept key of this sweep (did you mean 'stage.0.use'?)"),
    (["--by", "stage.0.use", "--metric", "test/accc"], "collect --metric 'test/accc': no finished point logged it"),
    (["--by", "stage.0.use", "--metric", "test/acc", "--x", "run.seed"], "must be one of the --by keys"),
    (["--metric", "test/acc", "--x", "run.seed"], "collect --x needs --by KEY"),
])
def test_bad_collect_options_exit_2_with_the_option_named(tmp_path, tmp_mlflow, capsys, extra, message):
    fake_sweep(tmp_path / "sw", tmp_mlflow)
    assert main(["sweep", "collect", str(tmp_path / "sw"), *extra]) == 2
    assert message in capsys.readouterr().err.replace("\n", " ")
