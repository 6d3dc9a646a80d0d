"""A plugin that fails to import: one formatted line on stderr, no raw UserWarning; --debug shows why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def broken_dist(tmp_path):
    """An installed-looking distribution (dist-info on PYTHONPATH) whose entry point raises on import."""
    site = tmp_path / "site"
    info = site / "ds_broken-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ds-broken\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[deepscope]\nbroken = ds_broken_mod\n")
    (site / "ds_broken_mod.py").write_text("import a_module_that_is_not_there_at_all\n")
    return site


def deepscope(site: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "DEEPSCOPE_STRICT_PLUGINS": "0"}
    script = Path(sys.executable).with_name("deepscope")
    return subprocess.run([str(script), *argv], capture_output=True, text=True, timeout=120, env=env)


def failure_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "ds-broken" in line]


@pytest.mark.parametrize("argv", [["list", "trainers"], ["plugins"], ["--version"]])
def test_a_broken_plugin_is_one_formatted_line(broken_dist, argv):
    done = deepscope(broken_dist, *argv)
    assert done.returncode == 0, done.stderr
    (line,) = failure_lines(done.stderr)
    assert line == ("deepscope: plugin ds-broken 1.2.3 failed to import and was skipped: ModuleNotFoundError: "
                    "No module named 'a_module_that_is_not_there_at_all' (traceback: `deepscope --debug plugins`, "
                    "or set DEEPSCOPE_STRICT_PLUGINS=1 to make it fatal)")
    assert "UserWarning" not in done.stderr and "warnings.warn" not in done.stderr
    assert "Traceback" not in done.stderr


def test_the_plugins_table_lists_the_failure_and_debug_shows_the_traceback(broken_dist):
    done = deepscope(broken_dist, "--debug", "plugins")
    assert done.returncode == 0, done.stderr
    assert "ds-broken" in done.stdout and "failed to load" in done.stdout
    assert "Traceback (most recent call last)" in done.stderr and "ds_broken_mod.py" in done.stderr
    assert len(failure_lines(done.stderr)) == 1


def test_strict_loading_makes_it_exit_2(broken_dist):
    env_strict = {**os.environ, "PYTHONPATH": str(broken_dist), "DEEPSCOPE_STRICT_PLUGINS": "1"}
    script = Path(sys.executable).with_name("deepscope")
    done = subprocess.run([str(script), "list"], capture_output=True, text=True, timeout=120, env=env_strict)
    assert done.returncode == 2 and "ds-broken 1.2.3" in done.stderr and "Traceback" not in done.stderr
