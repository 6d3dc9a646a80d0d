"""``deepscope --version``: the core's version and every plugin's, one per line."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
from pathlib import Path

import toy_plugin

from deepscope.cli import main
from deepscope.plugins import set_host
from deepscope.testing import make_host


def test_version_names_the_core_first_then_each_plugin(capsys):
    host = make_host(toy_plugin)
    set_host(host)
    try:
        assert main(["--version"]) == 0
    finally:
        set_host(None)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == f"deepscope {md.version('deepscope')}"
    expected = {f"{p.name} {p.version}" for p in host.plugins() if p.source != "builtin"}
    assert "toy_plugin 0+local" in expected and expected == set(lines[1:])
    assert err == ""


def test_version_of_the_installed_console_script_lists_every_entry_point_distribution():
    script = Path(sys.executable).with_name("deepscope")
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = set(out.stdout.splitlines())
    dists = {ep.dist.name: ep.dist.version for ep in md.entry_points(group="deepscope") if ep.dist}
    assert dists, "no plugin installed: the test would check nothing"
    for name, version in dists.items():
        assert f"{name} {version}" in lines
    assert f"deepscope {md.version('deepscope')}" == out.stdout.splitlines()[0]
