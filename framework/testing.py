"""Test kit for deepscope and its plugins (a pytest plugin: ``-p deepscope.testing``).

Fixtures:
- ``tmp_mlflow``: a tracking URI on a copy of one pre-migrated sqlite database
  (a fresh migration costs about 2 s; a copy costs milliseconds);
- ``host``: a :class:`PluginHost` without entry-point autoload, for
  registering plugin objects inside a test.

Helpers: :func:`make_host`, :func:`run_toml`, :func:`tiny_data`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Iterable

import pytest

from .plugins import PluginHost

_TEMPLATE_DB: Path | None = None


def make_host(*plugins: Any, autoload: bool = False, builtins: bool = True, strict: bool = True) -> PluginHost:
    """A plugin host holding only the given plugin objects (modules, classes or instances)."""
    host = PluginHost(autoload=autoload, strict=strict, builtins=builtins, disabled=())
    for i, plugin in enumerate(plugins):
        name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{i}"
        host.register(plugin, name=name)
    return host


def template_db() -> Path:
    """One migrated MLflow sqlite database per test session."""
    global _TEMPLATE_DB
    if _TEMPLATE_DB is None or not _TEMPLATE_DB.exists():
        from mlflow.tracking import MlflowClient

        directory = Path(tempfile.mkdtemp(prefix="deepscope-mlflow-template-"))
        db = directory / "mlflow.db"
        cwd = os.getcwd()
        os.chdir(directory)  # MLflow puts its 'Default' experiment's artifacts under the cwd of creation
        try:
            MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
        finally:
            os.chdir(cwd)
        _TEMPLATE_DB = db
    return _TEMPLATE_DB


def fresh_store(directory: Path) -> str:
    """Copy the template database into ``directory``; return its tracking URI."""
    directory.mkdir(parents=True, exist_ok=True)
    db = directory / "mlflow.db"
    shutil.copy(template_db(), db)
    return f"sqlite:///{db}"


@pytest.fixture
def tmp_mlflow(tmp_path, monkeypatch) -> str:
    """A private MLflow store for one test, set as ``MLFLOW_TRACKING_URI``."""
    uri = fresh_store(tmp_path / "store")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture
def host() -> PluginHost:
    return make_host()


def run_toml(text: str, host: PluginHost, *, tracking_uri: str | None = None, file: str = "<test>",
             track: bool = True):
    """Parse and run a pipeline given as a TOML string; return the RunResult."""
    from .config import parse_pipeline
    from .runner import run_pipeline

    pipeline = parse_pipeline(textwrap.dedent(text), host.registry, file=file)
    return run_pipeline(pipeline, host, tracking_uri=tracking_uri, track=track)


def tiny_data(n_train: int = 64, n_test: int = 32, shape: Iterable[int] = (1, 4, 4), classes: int = 3,
              seed: int = 0):
    """A small random, learnable DataBundle (label = argmax of per-class templates)."""
    import torch
    from torch.utils.data import TensorDataset

    from .data import DataBundle, DatasetInfo

    shape = tuple(shape)
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand((classes, *shape), generator=g)

    def make(n):
        y = torch.randint(0, classes, (n,), generator=g)
        x = (0.6 * templates[y] + 0.4 * torch.rand((n, *shape), generator=g)).clamp(0, 1)
        return TensorDataset(x, y)

    info = DatasetInfo("tiny", classes, shape, (0.5,) * shape[0], (0.25,) * shape[0])
    return DataBundle(make(n_train), make(n_test), info, batch_size=16, test_batch_size=32)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped when none is present)")
    os.environ.setdefault("DEEPSCOPE_STRICT_PLUGINS", "1")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
