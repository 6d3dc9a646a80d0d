"""Finding plugins through entry points and collecting what they register.

Entry points of the group ``deepscope`` are loaded one at a time: a plugin that
fails to import is recorded (distribution, version, error) and the others
still load. ``DEEPSCOPE_STRICT_PLUGINS=1`` makes a failure fatal (tests and CI)
and ``DEEPSCOPE_DISABLE_PLUGINS=a,b`` blocks plugins by distribution or
entry-point name.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import warnings
from typing import Any, Iterable

import attrs
import pluggy

from . import hookspecs
from .errors import DuplicateComponentError, PluginLoadError
from .hookspecs import EXTRA_HOOKS, KIND_HOOKS, PROJECT
from .registry import Registry

ENTRY_POINT_GROUP = "deepscope"
_HOOK_NAMES = [name for name in dir(hookspecs) if name.startswith("deepscope_")]
CORE_PLUGIN = "deepscope"


@attrs.define
class PluginInfo:
    """What ``deepscope plugins`` shows for one plugin."""

    name: str
    version: str
    source: str  # "entry point", "builtin" or "registered"


class PluginLoadWarning(UserWarning):
    """A plugin failed to import and was skipped (the CLI prints it as one line of its own instead)."""


def load_failure_line(name: str, version: str, error: str) -> str:
    """One line for a plugin that failed to import: distribution, version, error, where the traceback is."""
    return (f"deepscope: plugin {name} {version} failed to import and was skipped: {error} "
            "(traceback: `deepscope --debug plugins`, or set DEEPSCOPE_STRICT_PLUGINS=1 to make it fatal)")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _split_env(value: str | None) -> set[str]:
    return {v.strip() for v in (value or "").split(",") if v.strip()}


class PluginHost:
    """A plugin manager plus the registries built from its plugins' hooks."""

    def __init__(self, *, autoload: bool = True, strict: bool | None = None,
                 disabled: Iterable[str] | None = None, builtins: bool = True):
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.strict = _truthy(os.environ.get("DEEPSCOPE_STRICT_PLUGINS")) if strict is None else strict
        self.disabled = _split_env(os.environ.get("DEEPSCOPE_DISABLE_PLUGINS")) if disabled is None else set(disabled)
        self.info: dict[str, PluginInfo] = {}
        self.load_errors: dict[str, tuple[str, str]] = {}
        self.load_tracebacks: dict[str, str] = {}  # plugin name -> formatted traceback of its import error
        self._registry: Registry | None = None
        if builtins:
            from . import builtin

            self.register(builtin, name=CORE_PLUGIN, version=_version(CORE_PLUGIN), source="builtin")
        if autoload:
            self.load_entry_points()
            self.load_env_modules()

    # -- plugins ------------------------------------------------------------
    def register(self, plugin: Any, name: str, version: str = "0+local", source: str = "registered") -> None:
        """Register a plugin object (module or instance) under ``name``; a misspelled hook is an error."""
        self.pm.register(plugin, name=name)
        unknown = sorted(attr for attr in dir(plugin) if getattr(getattr(plugin, attr, None), f"{PROJECT}_impl", None)
                         is not None and attr not in _HOOK_NAMES)
        if unknown:
            self.pm.unregister(name=name)
            raise PluginLoadError(f"plugin {name} {version} implements unknown hooks {', '.join(unknown)}; "
                                  f"deepscope's hooks are {', '.join(sorted(_HOOK_NAMES))}")
        self.info[name] = PluginInfo(name, version, source)
        self._registry = None

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.info.pop(name, None)
        self._registry = None

    def load_entry_points(self) -> None:
        seen: dict[str, set[str]] = {}  # distribution -> entry-point names already handled
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist else ep.name
            version = ep.dist.version if ep.dist else "?"
            names = seen.setdefault(dist, set())
            if dist in self.disabled or ep.name in self.disabled or ep.name in names:
                continue  # the same distribution can be listed twice when it sits twice on sys.path
            # one plugin per entry point; a distribution's further entry points get their own names
            plugin_name = dist if not names else f"{dist}/{ep.name}"
            names.add(ep.name)
            if plugin_name in self.info:
                continue
            try:
                plugin = ep.load()
                self.register(plugin, name=plugin_name, version=version, source="entry point")
            except Exception as exc:  # a broken plugin must not stop the others
                import traceback

                text = f"{type(exc).__name__}: {exc}"
                self.load_errors[plugin_name] = (version, text)
                self.load_tracebacks[plugin_name] = "".join(traceback.format_exception(exc))
                if self.pm.get_plugin(plugin_name) is not None:
                    self.pm.unregister(name=plugin_name)
                if self.strict:
                    raise PluginLoadError(
                        f"plugin {plugin_name} {version} (entry point {ep.value!r}) failed to import: {text}. "
                        "Fix or uninstall it, or unset DEEPSCOPE_STRICT_PLUGINS to load the others anyway."
                    ) from exc
                warnings.warn(load_failure_line(plugin_name, version, text), PluginLoadWarning, stacklevel=2)
        self._registry = None

    def load_env_modules(self) -> None:
        """Register the modules named in ``DEEPSCOPE_PLUGINS_MODULES`` (plugins without an entry point).

        Sweep workers and tests use it to pass plugins that are importable but not installed.
        """
        for name in _split_env(os.environ.get("DEEPSCOPE_PLUGINS_MODULES")):
            if name in self.info or name in self.disabled:
                continue
            try:
                self.register(importlib.import_module(name), name=name, source="env")
            except ImportError as exc:
                raise PluginLoadError(f"DEEPSCOPE_PLUGINS_MODULES names {name!r}, which cannot be imported: "
                                      f"{exc}. Fix PYTHONPATH or the variable.") from exc

    # -- registries ---------------------------------------------------------
    @property
    def registry(self) -> Registry:
        """Every component, built lazily from the registration hooks."""
        if self._registry is None:
            self._registry = self._build_registry()
        return self._registry

    def _build_registry(self) -> Registry:
        """Kinds first (component kinds, then stage kinds), then the components of every kind."""
        from .kinds import make_kind_register, make_stage_register

        kinds: dict = {}
        errors = dict(self.load_errors)  # import failures, then every registration hook that raised
        self._call_impls("deepscope_register_component_kinds", lambda info: make_kind_register(kinds, info.name),
                         errors)
        hooks = {**KIND_HOOKS, **EXTRA_HOOKS}
        kinds = {name: attrs.evolve(kind, hook=hooks.get(name)) for name, kind in kinds.items()}
        registry = Registry(kinds.values())
        registry.strict = self.strict
        registry.load_errors = errors
        self._call_impls("deepscope_register_stage_kinds",
                         lambda info: make_stage_register(registry.stage_kinds, registry.stage_aliases, info.name),
                         errors)
        for do, stage_kind in list(registry.stage_kinds.items()):
            if stage_kind.component_kind not in registry.component_kinds:
                raise PluginLoadError(f"plugin {stage_kind.plugin}: stage kind {do!r} uses component kind "
                                      f"{stage_kind.component_kind!r}, which no plugin registers; kinds are "
                                      f"{', '.join(registry.kinds)}")
        for kind in registry.component_kinds.values():
            if kind.hook is not None:
                self._call_impls(kind.hook, lambda info, kind=kind: registry.make_register(kind.name, info.name,
                                                                                           info.version), errors)
        self._call_impls("deepscope_register_components", lambda info: _any_kind_register(registry, info), errors)
        return registry

    def _call_impls(self, hook_name: str, make_register, errors: dict) -> None:
        """Call every plugin's implementation of one registration hook with its own ``register``;
        a failure is fatal when strict, else recorded in ``errors`` (plugin -> (version, text))."""
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            info = self.info.get(impl.plugin_name, PluginInfo(impl.plugin_name, "?", "registered"))
            try:
                impl.function(**({"register": make_register(info)} if impl.argnames else {}))
            except Exception as exc:
                if self.strict or isinstance(exc, (PluginLoadError, DuplicateComponentError)):
                    raise
                errors[info.name] = (info.version, f"{hook_name} raised {type(exc).__name__}: {exc}")
                warnings.warn(f"deepscope: plugin {info.name} failed in {hook_name}: {exc}", stacklevel=2)

    @property
    def hook(self):
        return self.pm.hook

    def plugins(self) -> list[PluginInfo]:
        return sorted(self.info.values(), key=lambda p: (p.source != "builtin", p.name))


def _any_kind_register(registry: Registry, info: PluginInfo):
    """``register(kind, name, factory, ...)`` for ``deepscope_register_components``."""

    def register(kind: str, name: str, factory: Any, config_cls: type | None = None, **options: Any) -> None:
        if kind not in registry.component_kinds:
            raise PluginLoadError(f"plugin {info.name} registers {name!r} as a {kind!r}, a component kind no "
                                  f"plugin registers; kinds are {', '.join(registry.kinds)}")
        registry.make_register(kind, info.name, info.version)(name, factory, config_cls, **options)

    return register


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "0+local"


_default_host: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide host with every installed plugin (built on first use)."""
    global _default_host
    if _default_host is None:
        _default_host = PluginHost()
    return _default_host


def set_host(host: PluginHost | None) -> None:
    """Replace the process-wide host (tests)."""
    global _default_host
    _default_host = host
