"""A real third-party plugin, pip-installed, used by a pipeline through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from deepscope.testing import fresh_store

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "third-party-plugin"


def pip(*args: str) -> None:
    out = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr


@pytest.fixture(scope="module")
def installed_example():
    pip("install", "--no-deps", "--no-build-isolation", str(EXAMPLE))
    yield
    pip("uninstall", "-y", "deepscope-example")


def deepscope(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deepscope.cli", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "DEEPSCOPE_STRICT_PLUGINS": "1", **(env or {})},
                          cwd=cwd)


def test_installed_plugin_is_listed(installed_example):
    out = deepscope("plugins", "--json")
    assert out.returncode == 0, out.stderr
    example = next(p for p in json.loads(out.stdout) if p["name"] == "deepscope-example")
    assert example["version"] == "0.1.0"
    assert example["components"] == {"pruner": ["layerwise-magnitude"], "probe": ["zero-fraction"]}


def test_pipeline_uses_the_plugins_pruner_and_probe(installed_example, tmp_path):
    uri = fresh_store(tmp_path / "store")
    out = deepscope("run", str(EXAMPLE / "pipeline.toml"), env={"MLFLOW_TRACKING_URI": uri}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("examples").experiment_id])
    assert run.info.status == "FINISHED"
    # LeNet-300-100: 784x300 and 300x100 pruned to 10 %, the 100x10 classifier kept.
    expected = (round(0.9 * 235200) + round(0.9 * 30000)) / 266200
    history = client.get_metric_history(run.info.run_id, "probe/zero-fraction/overall")
    assert [m.step for m in history] == [0, 1]
    assert history[0].value == pytest.approx(expected, abs=1e-4)
    assert history[1].value == pytest.approx(expected, abs=1e-4)  # masks stay applied through training
    assert run.data.tags["deepscope.plugin.deepscope-example"] == "0.1.0"


def test_broken_third_party_plugin_does_not_stop_the_others(installed_example, tmp_path):
    broken = tmp_path / "broken"
    (broken / "deepscope_broken").mkdir(parents=True)
    (broken / "deepscope_broken" / "__init__.py").write_text("import does_not_exist_anywhere\n")
    (broken / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "deepscope-broken"\nversion = "9.9"\n'
        '[project.entry-points.deepscope]\ndeepscope-broken = "deepscope_broken"\n')
    pip("install", "--no-deps", "--no-build-isolation", str(broken))
    try:
        out = deepscope("plugins", env={"DEEPSCOPE_STRICT_PLUGINS": "0"})
        assert out.returncode == 0, out.stderr
        assert "plugin deepscope-broken 9.9 failed to import and was skipped: ModuleNotFoundError" in out.stderr
        text = " ".join(out.stdout.split())
        assert "deepscope-broken" in text and "failed to load: ModuleNotFoundError" in text
        assert "layerwise-magnitude" in text  # the others still loaded
        strict = deepscope("list", env={"DEEPSCOPE_STRICT_PLUGINS": "1"})
        assert strict.returncode == 2
        assert "plugin deepscope-broken 9.9" in " ".join(strict.stderr.split())
    finally:
        pip("uninstall", "-y", "deepscope-broken")
