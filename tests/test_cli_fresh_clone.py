"""A fresh clone with nothing beside it (no ../shared): the suite collects, and data tests skip saying why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip(f"{ROOT} is not a git checkout, so there is nothing to clone")
    where = tmp_path_factory.mktemp("fresh") / "deepscope"
    done = subprocess.run(["git", "clone", "-q", str(ROOT), str(where)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in where.parent.iterdir()) == ["deepscope"]  # no ../shared beside it
    return where


def pytest_in(where: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DEEPSCOPE_DATA", "PYTHONPATH")}
    env["DEEPSCOPE_STRICT_PLUGINS"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=where, env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_whole_suite_collects_in_a_fresh_clone(clone):
    done = pytest_in(clone, "--collect-only", "-q")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert "tests collected" in summary and "error" not in summary, summary  # e.g. "661 tests collected in 9s"
    assert "ERROR" not in done.stdout and "Interrupted" not in done.stdout
    assert "plugins/standard/tests/test_datasets.py::" in done.stdout


def test_tests_needing_the_full_data_skip_with_a_reason_in_a_fresh_clone(clone):
    done = pytest_in(clone, "-q", "-rs", "plugins/standard/tests/test_datasets.py")
    assert done.returncode == 0, done.stdout[-3000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert "error" not in summary and "failed" not in summary, summary
    skipped = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    if any((SYSTEM_FASHION_MNIST / d).is_dir() for d in ("", "FashionMNIST/raw")):
        return  # the Debian package is installed: those tests run (and passed above) instead of skipping
    assert skipped, done.stdout[-3000:]
    for line in skipped:
        assert "needs the full Fashion-MNIST" in line and "DEEPSCOPE_DATA" in line, line
        assert str(clone.parent / "shared" / "data" / "fashion-mnist") in line  # it looked beside the clone
