"""Ctrl-C or SIGTERM during ``deepscope run``: a message on its own line naming the run and how to resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import toy_plugin

from deepscope.checkpoint import checkpoint_path
from deepscope.cli import main
from deepscope.plugins import set_host
from deepscope.testing import make_host

TESTS = Path(__file__).parent
PIPELINE = textwrap.dedent("""
    [run]
    name = "interrupt"
    seed = 0
    {extra}
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
    use = "raise"
    error = "{error}"
""")


def interrupted_line(err: str) -> str:
    (line,) = [line for line in err.splitlines() if "interrupted:" in line]
    assert line.startswith("interrupted:"), f"not on its own line: {line!r}"
    return line


def killed_run_id(uri: str) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("deepscope").experiment_id])
    assert run.info.status == "KILLED"
    return run.info.run_id


def sigterm_run(path: Path, uri: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(TESTS), "DEEPSCOPE_PLUGINS_MODULES": "toy_plugin",
           "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.Popen([sys.executable, "-m", "deepscope.cli", "run", str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # the probe says so on stdout, then sleeps
        if "probe sleeping" in line:
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("checkpointed", [False, True])
def test_sigterm_names_the_run_and_the_resume_command_when_a_checkpoint_exists(checkpointed, tmp_path, tmp_mlflow):
    path = tmp_path / "p.toml"
    path.write_text(PIPELINE.format(extra="checkpoint_every = 1" if checkpointed else "", error="sleep"))
    done = sigterm_run(path, tmp_mlflow)
    assert done.returncode == 130, done.stderr
    run_id = killed_run_id(tmp_mlflow)
    line = interrupted_line(done.stderr)
    assert f"run {run_id} is marked KILLED" in line and "Traceback" not in done.stderr
    command = f"deepscope run {path} --resume {run_id}"
    assert checkpoint_path(tmp_mlflow, run_id).exists() == checkpointed
    assert (command in line) == checkpointed
    if not checkpointed:
        assert "no checkpoint" in line


def test_interrupt_after_a_live_bar_starts_on_a_fresh_line(tmp_path, tmp_mlflow, monkeypatch, capsys):
    from deepscope import progress

    set_host(make_host(toy_plugin))
    try:
        monkeypatch.setattr(progress, "live_bar_shown", True)
        path = tmp_path / "p.toml"
        path.write_text(PIPELINE.format(extra="", error="interrupt"))
        assert main(["run", str(path)]) == 130
    finally:
        set_host(None)
    err = capsys.readouterr().err
    run_id = killed_run_id(tmp_mlflow)
    before, _, after = err.partition("interrupted:")
    assert before.endswith("\n\n")  # the newline written for the bar, after the last line of output
    assert f"run {run_id} is marked KILLED" in after
