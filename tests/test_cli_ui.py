"""`deepscope ui` for real: serves the page, prints the runs-table URL, and SIGTERM / Ctrl-C stop everything."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("flask", reason="the UI needs the full mlflow package: pip install 'deepscope[ui]'")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def tree(pid: int) -> set[int]:
    """Live descendants of ``pid``, read from /proc (independent of the CLI's own walk)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if stat[0] != "Z":
                children.setdefault(int(stat[1]), []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc (Linux)")
@pytest.mark.parametrize("sig, jobs", [(signal.SIGTERM, "false"), (signal.SIGINT, "true")],
                         ids=["SIGTERM", "Ctrl-C with MLflow's job runner and its huey consumers"])
def test_ui_serves_then_stops_its_whole_tree(sig, jobs, tmp_path, tmp_mlflow):
    from mlflow.tracking import MlflowClient

    experiment_id = MlflowClient(tmp_mlflow).create_experiment("deepscope")
    port = free_port()
    script = Path(sys.executable).with_name("deepscope")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": jobs}
    proc = subprocess.Popen([str(script), "ui", "--port", str(port), "--store", tmp_mlflow], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        page = None
        while time.monotonic() < deadline and page is None:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    page = (response.status, response.read().decode("utf-8", "replace"))
            except OSError:
                time.sleep(0.5)
        assert page is not None and page[0] == 200 and "<html" in page[1].lower()
        spawned = tree(proc.pid)
        assert spawned, "the UI runs in child processes: there must be something to stop"
        commands = " ".join(Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ") for pid in spawned
                            if running(pid))
        assert ("huey_consumer" in commands) == (jobs == "true"), commands
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:  # never leave a server behind, even when the test fails
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert rc == 0, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs" in " ".join(err.split())
    time.sleep(0.5)
    assert not port_in_use(port)
    assert not [pid for pid in spawned if running(pid)], "processes left behind"
