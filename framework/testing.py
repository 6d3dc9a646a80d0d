"""Test kit for deepscope and its plugins (a pytest plugin: ``-p deepscope.testing``).

Fixtures:
- ``tmp_mlflow``: a tracking URI on a copy of one pre-migrated sqlite database
  (a fresh migration costs about 2 s; a copy costs milliseconds);
- ``host``: a :class:`PluginHost` without entry-point autoload, for
  registering plugin objects inside a test.

Helpers: :func:`make_host`, :func:`run_toml`, :func:`tiny_data`, :class:`KillSwitch` (a real
SIGKILL at a chosen metric) and :func:`run_until_killed` (a run killed by it, for resume tests),
:class:`InterruptAt` and :func:`interrupt_then_resume` (the same in process, by KeyboardInterrupt), and
:func:`check_plugin`, a smoke test of everything one plugin registers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import attrs
import pytest

from .hookspecs import hookimpl
from .plugins import PluginHost

_TEMPLATE_DB: Path | None = None


class KillSwitch:
    """A plugin that SIGKILLs its own process right after the ``occurrence``-th value of ``key`` is
    logged at ``step``: a real crash at a chosen point, for resume tests."""

    def __init__(self, key: str, step: int, occurrence: int = 1):
        self.key, self.step, self.left = key, step, occurrence

    @hookimpl
    def deepscope_metrics_logged(self, run, metrics, step):
        if self.key in metrics and step == self.step:
            self.left -= 1
            if self.left == 0:
                import signal

                os.kill(os.getpid(), signal.SIGKILL)


class InterruptAt:
    """A plugin that raises KeyboardInterrupt right after ``key`` is logged at ``step`` (an in-process
    interruption, for resume tests that need no real crash); ``run_id`` is the interrupted run's."""

    def __init__(self, key: str, step: int):
        self.key, self.step, self.run_id = key, step, None

    @hookimpl
    def deepscope_run_started(self, run):
        self.run_id = run.tracker.run_id

    @hookimpl
    def deepscope_metrics_logged(self, run, metrics, step):
        if self.key in metrics and step == self.step:
            raise KeyboardInterrupt


def interrupt_then_resume(text: str, plugins: Iterable[Any], uri: str, *, key: str, step: int):
    """Run ``text`` with ``plugins`` on the store ``uri``, interrupted right after ``key`` is logged at
    ``step``, then resume that run to the end; return (run id, the resumed run's RunResult)."""
    from .config import parse_pipeline
    from .runner import run_pipeline

    plugins = list(plugins)
    stopper = InterruptAt(key, step)
    try:
        run_pipeline(parse_pipeline(text, make_host(*plugins).registry), make_host(*plugins, stopper),
                     tracking_uri=uri)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError(f"the run was not interrupted: no {key} was logged at step {step}")
    host = make_host(*plugins)
    resumed = run_pipeline(parse_pipeline(text, host.registry), host, tracking_uri=uri, resume_run_id=stopper.run_id)
    return stopper.run_id, resumed


_KILLED_DRIVER = """
import sys
import torch
torch.set_num_threads(1)
sys.path[:0] = {paths!r}
from importlib import import_module
from deepscope import parse_pipeline, run_pipeline
from deepscope.testing import KillSwitch
module, _, name = {host!r}.partition(":")
h = getattr(import_module(module), name)(KillSwitch({key!r}, {step!r}))
run_pipeline(parse_pipeline({text!r}, h.registry), h, tracking_uri={uri!r})
"""


def run_until_killed(text: str, uri: str, *, host: str, key: str, step: int, paths: Iterable[str] = (),
                     timeout: float = 300) -> str:
    """Run the pipeline ``text`` on the store ``uri`` in a fresh one-thread process that SIGKILLs itself
    right after ``key`` is logged at ``step``; return the killed run's id, for a resume test.

    ``host`` is ``"module:function"``: ``function(*extra_plugins)`` returns the PluginHost, importable
    with ``paths`` prepended to ``sys.path``. Run the resume (and any reference) on one thread too
    (``torch.set_num_threads(1)``): CPU float sums depend on the thread count.
    """
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    code = _KILLED_DRIVER.format(paths=[str(p) for p in paths], host=host, key=key, step=step, text=text, uri=uri)
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != -9:
        raise AssertionError(f"the run was not SIGKILLed at {key} step {step} (exit {proc.returncode}):\n"
                             f"{proc.stderr[-3000:]}")
    client = MlflowClient(tracking_uri=uri)
    (killed,) = client.search_runs([client.get_experiment_by_name("deepscope").experiment_id])
    return killed.info.run_id


def make_host(*plugins: Any, autoload: bool = False, builtins: bool = True, strict: bool = True) -> PluginHost:
    """A plugin host holding only the given plugin objects (modules, classes or instances)."""
    host = PluginHost(autoload=autoload, strict=strict, builtins=builtins, disabled=())
    for i, plugin in enumerate(plugins):
        name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{i}"
        host.register(plugin, name=name)
    return host


#: what check_plugin gives a PrunerConfig, whose compression and sparsity both default to None
_PRUNER_SAMPLE = {"sparsity": 0.5}


class ComponentCheck(NamedTuple):
    """One line of :func:`check_plugin`'s report.

    ``status`` is "ok", "ok with sparsity=0.5" (a pruner, see :func:`check_plugin`) or "needs a, b".
    """

    kind: str
    name: str
    status: str


def check_plugin(plugin: Any, *, host: PluginHost | None = None) -> list[ComponentCheck]:
    """Check every component ``plugin`` registers, of every kind; raise AssertionError listing all failures.

    For each component: its lazy ``"module:attr"`` factory resolves and is callable, and its config
    class builds from its defaults through the core's own structuring (so validators, component
    defaults such as ``{"use": "pgd"}`` and ``__attrs_post_init__`` run). A config with required
    fields cannot be built from defaults: it is reported as "needs <fields>", not as a failure. A
    :class:`~deepscope.PrunerConfig` whose compression and sparsity both default to None is built
    with ``sparsity=0.5``, since a pipeline must always choose one of them.

    ``host``: a host holding the plugins this one builds on (e.g. ``make_host(deepscope_standard)``
    for a config whose default names ``pgd``); the plugin is registered into it unless already there.
    By default a fresh :func:`make_host` with the core's builtins only.
    """
    if host is None:
        host = make_host(plugin)
    elif not host.pm.is_registered(plugin):
        host.register(plugin, name=getattr(plugin, "__name__", None) or type(plugin).__name__)
    name = host.pm.get_name(plugin)
    try:
        components = [c for c in host.registry.components() if c.plugin == name]
    except Exception as exc:  # a registration hook raised, or a name clashes
        raise AssertionError(f"plugin {name}: registering its components failed: {type(exc).__name__}: {exc}") \
            from exc

    report: list[ComponentCheck] = []
    failures: list[str] = []
    for comp in components:
        problem = _check_factory(comp)
        status = "ok"
        if problem is None and comp.config_cls is not None:
            status, problem = _check_config(comp, host.registry)
        if problem is not None:
            failures.append(f"plugin {name}: {comp.kind} {comp.name!r}: {problem}")
        report.append(ComponentCheck(comp.kind, comp.name, status))
    if failures:
        raise AssertionError(f"check_plugin found {len(failures)} problem(s):\n" + "\n".join(failures))
    return report


def _check_config(comp: Any, registry: Any) -> tuple[str, str | None]:
    """(status, problem or None) of building ``comp``'s config class from its defaults."""
    from .bases import PrunerConfig
    from .config import structure_config

    cls = comp.config_cls
    required = [f.alias or f.name for f in attrs.fields(cls) if f.init and f.default is attrs.NOTHING]
    if required:
        return f"needs {', '.join(required)}", None
    # a pruner must be given one of compression and sparsity: a required choice that no single field
    # expresses, so it is built with a sample sparsity rather than skipped
    fields = {f.name: f.default for f in attrs.fields(cls)}
    undecided = issubclass(cls, PrunerConfig) and fields.get("compression") is None and fields.get("sparsity") is None
    table = dict(_PRUNER_SAMPLE) if undecided else {}
    try:
        _, issues = structure_config(cls, table, f"{comp.kind}.{comp.name}", what=f"{comp.kind} {comp.name!r}",
                                     registry=registry)
        messages = [f"{i.path}: {i.message}" for i in issues]
    except Exception as exc:  # e.g. a ConfigError from __attrs_post_init__, which structuring does not catch
        messages = [f"{type(exc).__name__}: {exc}"]
    if messages:
        return "failed", f"its config class {cls.__name__} does not build from its defaults: " + "; ".join(messages)
    return ("ok with " + ", ".join(f"{k}={v}" for k, v in table.items())) if table else "ok", None


def _check_factory(comp: Any) -> str | None:
    """None if the component's factory resolves to a callable, else what is wrong."""
    spec = comp.factory
    shown = f"factory {spec!r}" if isinstance(spec, str) else f"factory {getattr(spec, '__qualname__', spec)!r}"
    if isinstance(spec, str) and (":" not in spec or not all(spec.partition(":")[::2])):
        return f"{shown} is not of the form 'module:attr'"
    try:
        factory = comp.resolve_factory()
    except Exception as exc:  # ImportError, AttributeError, or whatever the module raises on import
        return f"{shown} does not resolve: {type(exc).__name__}: {exc}"
    if not callable(factory):
        return f"{shown} resolves to a {type(factory).__name__}, which is not callable"
    return None


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
