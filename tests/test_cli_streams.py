"""Results on stdout, everything else on stderr; numbers printed for people."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import toy_plugin

from deepscope.cli import main
from deepscope.cli_support import format_value
from deepscope.plugins import set_host
from deepscope.testing import make_host

TESTS = Path(__file__).parent
PIPELINE = textwrap.dedent("""
    [run]
    name = "streams"
    seed = 0
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


@pytest.fixture
def toy_host():
    host = make_host(toy_plugin)
    set_host(host)
    yield host
    set_host(None)


@pytest.fixture
def pipeline(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(PIPELINE)
    return path


def n_params(hidden=8, classes=3):
    """The tiny MLP's parameter count, from its shapes (independent of the probe)."""
    from deepscope.testing import tiny_data

    inputs = tiny_data(n_train=64, classes=classes).info.num_inputs
    return inputs * hidden + hidden + hidden * classes + classes


def test_run_prints_the_table_on_stdout_and_notes_on_stderr(toy_host, pipeline, tmp_mlflow, capsys):
    assert main(["run", str(pipeline)]) == 0
    out, err = capsys.readouterr()
    assert "FINISHED" in out and "train/sgd/loss" in out and "probe/count/params" in out
    assert "stage 0" in err and "Tracked in" in err
    assert "train/sgd/loss" not in err and "stage 0" not in out and "Tracked in" not in out
    # a whole number prints as one (a parameter count), a loss with 4 decimals
    row = next(line for line in out.splitlines() if "probe/count/params" in line)
    assert re.search(rf"\b{n_params()}\b", row) and "." not in row.replace("probe/count/params", "")
    loss = next(line for line in out.splitlines() if "train/sgd/loss" in line)
    assert re.search(r"\d\.\d{4}\b", loss)


def test_run_redirected_to_a_file_leaves_the_table_there(pipeline, tmp_path, tmp_mlflow):
    env = {**os.environ, "PYTHONPATH": str(TESTS), "DEEPSCOPE_PLUGINS_MODULES": "toy_plugin",
           "MLFLOW_TRACKING_URI": tmp_mlflow}
    out_file = tmp_path / "out.txt"
    with out_file.open("w") as handle:
        proc = subprocess.run([sys.executable, "-m", "deepscope.cli", "run", str(pipeline)], env=env,
                              stdout=handle, stderr=subprocess.PIPE, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    text = out_file.read_text()
    assert "FINISHED" in text and "train/sgd/loss" in text and str(n_params()) in text
    assert "Tracked in" in proc.stderr and "train/sgd/loss" not in proc.stderr


def test_validate_ok_line_is_on_stdout(toy_host, pipeline, capsys):
    assert main(["validate", str(pipeline)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("ok ") and str(pipeline) in " ".join(out.split())
    assert err == ""


def test_validate_error_is_on_stderr_only(toy_host, tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(PIPELINE.replace("epochs = 1", "epochs = 0"))
    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "$.stage[0].epochs" in " ".join(err.split())


@pytest.mark.parametrize("argv, expected", [
    (["list"], ["tiny-mlp", "sgd", "shift", "toy_plugin"]),
    (["list", "stages"], ["train", "probe"]),
    (["show", "trainer", "sgd"], ["epochs", "learning rate", "0.1"]),
    (["show", "stage", "train"], ['do = "train"', "uses: a trainer"]),
    (["plugins"], ["toy_plugin", "trainer: sgd"]),
])
def test_inspecting_commands_print_on_stdout_only(argv, expected, toy_host, capsys):
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert err == ""
    for text in expected:
        assert text in out


def test_plugins_json_is_valid_json_on_stdout(toy_host, capsys):
    assert main(["plugins", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and any(p["name"] == "toy_plugin" for p in json.loads(out))


def test_errors_go_to_stderr(toy_host, capsys):
    assert main(["show", "trainer", "nope"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "nope" in err


@pytest.mark.parametrize("value, text", [
    (500.0, "500"), (500, "500"), (-3.0, "-3"), (0.0, "0"), (0.123456, "0.1235"), (2.5, "2.5000"),
    (float("nan"), "nan"), (float("inf"), "inf"), (1e20, f"{1e20:.4f}"), (True, "True"), ("x", "x"),
])
def test_format_value(value, text):
    assert format_value(value) == text


def test_sweep_status_prints_its_table_on_stdout(toy_host, tmp_path, tmp_mlflow, capsys, monkeypatch):
    path = tmp_path / "sweep.toml"
    path.write_text(PIPELINE + '[sweep]\nexecutor = "inline"\n[sweep.grid]\n"stage.0.epochs" = [1, 2]\n')
    assert main(["sweep", str(path), "--dir", str(tmp_path / "sw")]) == 0
    capsys.readouterr()
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["sweep", "status", str(tmp_path / "sw")]) == 0
    out, err = capsys.readouterr()
    assert "2 points: 2 FINISHED" in out and err == ""
