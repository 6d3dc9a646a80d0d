"""Every pipeline under examples/ validates through the CLI (so a broken example fails CI).

`make validate-examples` does the same from the shell; the last test checks it covers the same files.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomli
from pathlib import Path

import pytest

from deepscope.cli import main
from deepscope.plugins import PluginHost, set_host

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
THIRD_PARTY = EXAMPLES / "third-party-plugin"


def pipelines() -> list[Path]:
    """The *.toml files under examples/ with a [run] table (sweep files included); tomli, as deepscope reads them."""
    found = []
    for path in sorted(EXAMPLES.rglob("*.toml")):
        if isinstance(tomli.loads(path.read_text(encoding="utf-8")).get("run"), dict):
            found.append(path)
    return found


@pytest.fixture(scope="module")
def example_host():
    """Every installed plugin, plus the third-party example's plugin from its source folder."""
    sys.path.insert(0, str(THIRD_PARTY))
    try:
        host = PluginHost(disabled={"deepscope-example"})  # its entry point, when installed, is not loaded twice
        host.register(importlib.import_module("deepscope_example"), name="deepscope_example", source="env")
        set_host(host)
        yield host
    finally:
        set_host(None)
        sys.path.remove(str(THIRD_PARTY))


def test_there_are_examples_to_check():
    files = {p.relative_to(EXAMPLES).as_posix() for p in pipelines()}
    assert "quickstart.toml" in files and "sweeps/quickstart-sweep.toml" in files and len(files) >= 20
    assert "third-party-plugin/pyproject.toml" not in files


@pytest.mark.parametrize("path", pipelines(), ids=lambda p: p.relative_to(EXAMPLES).as_posix())
def test_example_validates(path, example_host, capsys):
    rc = main(["validate", str(path)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert out.startswith(f"ok {path}")


def test_make_validate_examples_covers_the_same_files():
    out = subprocess.run(["make", "-n", "validate-examples"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    recipe = out.stdout.split("status=0;", 1)[1]
    listed = set(recipe.split("for f in", 1)[1].split("; do", 1)[0].split())
    assert listed == {p.relative_to(ROOT).as_posix() for p in pipelines()}
    assert "deepscope validate" in recipe
