"""One registry of every component, fed only by the registration hooks.

Names are short and stable (``pgd``, ``lenet-300-100``). A duplicate name
raises and names both plugins; ``plugin:name`` picks one explicitly. An unknown
name answers with close matches, the installed names of that kind and any
plugin that failed to import.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Iterable

import attrs

from .errors import DuplicateComponentError, UnknownComponentError
from .kinds import ComponentKind, StageKind, resolve


@attrs.define
class Component:
    """A registered component: what it is called, how to build it, who provides it."""

    kind: str
    name: str
    factory: Any  # a callable, or "module:attr" resolved on first use (keeps imports light)
    config_cls: type | None
    plugin: str
    version: str
    aliases: tuple[str, ...] = ()
    doc: str = ""
    requires: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    #: datasets: ``shape(config) -> DataShape`` without loading data (a callable or a torch-free "module:attr")
    shape: Any = None

    def data_shape(self, config: Any) -> Any:
        """The dataset's :class:`deepscope.DataShape` for ``config``, or None when it does not say."""
        return resolve(self.shape)(config) if self.shape is not None else None

    @property
    def qualified_name(self) -> str:
        return f"{self.plugin}:{self.name}"

    def resolve_factory(self) -> Callable:
        self.factory = resolve(self.factory)
        return self.factory

    def build(self, *args, **kwargs):
        return self.resolve_factory()(*args, **kwargs)

    @property
    def summary(self) -> str:
        text = self.doc or (self.config_cls.__doc__ if self.config_cls else "") or ""
        return text.strip().splitlines()[0] if text.strip() else ""


class Registry:
    """Components by kind and name, the kinds themselves, and the plugins that failed to load."""

    def __init__(self, kinds: Iterable[str | ComponentKind], stage_kinds: Iterable[StageKind] = ()):
        records = [k if isinstance(k, ComponentKind) else ComponentKind(k) for k in kinds]
        #: component kind name -> its record (doc, config base, contract)
        self.component_kinds: dict[str, ComponentKind] = {k.name: k for k in records}
        self.kinds = tuple(self.component_kinds)
        #: ``do`` -> stage kind, and alias -> ``do``
        self.stage_kinds: dict[str, StageKind] = {k.name: k for k in stage_kinds}
        self.stage_aliases: dict[str, str] = {a: k.name for k in self.stage_kinds.values() for a in k.aliases}
        self._by_kind: dict[str, dict[str, Component]] = {k: {} for k in self.kinds}
        self._aliases: dict[str, dict[str, str]] = {k: {} for k in self.kinds}
        #: distribution -> (version, error text) for plugins that failed to import
        self.load_errors: dict[str, tuple[str, str]] = {}
        #: kind -> name -> every component registered under that clashing name
        self._conflicts: dict[str, dict[str, list[Component]]] = {k: {} for k in self.kinds}
        #: messages for the clashes found (shown by ``deepscope plugins``)
        self.duplicates: list[str] = []
        #: raise on the first clash instead of deferring to lookups
        self.strict = True

    # -- adding -------------------------------------------------------------
    def add(self, comp: Component, *, strict: bool = True) -> None:
        """Add a component; a clashing name raises (strict) or is kept for ``plugin:name`` lookups."""
        if comp.kind not in self._by_kind:
            raise ValueError(f"unknown component kind {comp.kind!r}")
        table = self._by_kind[comp.kind]
        for name in (comp.name, *comp.aliases):
            clash = table.get(name) or table.get(self._aliases[comp.kind].get(name, ""))
            if clash is not None:
                error = self._duplicate_error(comp.kind, name, [clash, comp])
                if strict:
                    raise error
                self._conflicts[comp.kind].setdefault(name, [clash]).append(comp)
                self.duplicates.append(str(error))
                return
        table[comp.name] = comp
        for alias in comp.aliases:
            self._aliases[comp.kind][alias] = comp.name

    @staticmethod
    def _duplicate_error(kind: str, name: str, comps: list[Component]) -> DuplicateComponentError:
        who = " and by ".join(f"{c.plugin} {c.version}" for c in comps)
        picks = " or ".join(f"'{c.plugin}:{c.name}'" for c in comps)
        return DuplicateComponentError(
            f"{kind} {name!r} is registered twice: by {who}. Uninstall one of them, or block it with "
            f"DEEPSCOPE_DISABLE_PLUGINS; pipelines can pick one as {picks}.")

    def make_register(self, kind: str, plugin: str, version: str) -> Callable:
        """The ``register`` callback handed to one plugin's registration hook."""

        def register(name: str, factory: Any, config_cls: type | None = None, *, aliases: Iterable[str] = (),
                     doc: str = "", requires: Iterable[str] = (), provides: Iterable[str] = (),
                     shape: Any = None) -> None:
            if not isinstance(name, str) or not name or ":" in name:
                raise ValueError(f"{plugin}: component names must be non-empty strings without ':' (got {name!r})")
            if config_cls is not None and not attrs.has(config_cls):
                raise TypeError(f"{plugin}: {kind} {name!r}: config_cls must be an attrs class")
            base = self.component_kinds[kind].config_base
            if base is not None and not (config_cls is not None and issubclass(config_cls, base)):
                got = config_cls.__name__ if config_cls is not None else "no config class"
                raise TypeError(f"{plugin}: {kind} {name!r}: its config class must subclass "
                                f"deepscope.{base.__name__} (got {got}), because the {kind} stage reads "
                                "the shared parameters from it")
            if shape is not None and kind != "dataset":
                raise TypeError(f"{plugin}: {kind} {name!r}: only datasets take shape=")
            self.add(Component(kind, name, factory, config_cls, plugin, version, tuple(aliases), doc,
                               tuple(requires), tuple(provides), shape), strict=self.strict)

        return register

    # -- looking up ---------------------------------------------------------
    def stage_kind(self, do: str) -> StageKind | None:
        """The stage kind for ``do`` (or one of its aliases)."""
        return self.stage_kinds.get(self.stage_aliases.get(do, do))

    def listed_kinds(self) -> list[str]:
        """Component kinds of pipelines (not extension points such as prune targets)."""
        return [k.name for k in self.component_kinds.values() if k.listed]

    def names(self, kind: str) -> list[str]:
        return sorted(self._by_kind[kind])

    def components(self, kind: str | None = None) -> list[Component]:
        kinds = [kind] if kind else self.kinds
        return [c for k in kinds for _, c in sorted(self._by_kind[k].items())]

    def find(self, kind: str, name: str) -> Component | None:
        """The component called ``name`` (or ``plugin:name``); a clashing bare name raises."""
        plugin, sep, short = name.rpartition(":")
        table = self._by_kind.get(kind, {})
        conflicts = self._conflicts.get(kind, {})
        if short not in conflicts:  # a clash may be on an alias itself, so look before resolving it
            short = self._aliases.get(kind, {}).get(short, short)
        clashing = conflicts.get(short)
        if clashing:
            if not sep:
                raise self._duplicate_error(kind, short, clashing)
            return next((c for c in clashing if c.plugin == plugin), None)
        comp = table.get(short)
        if comp is not None and sep and comp.plugin != plugin:
            return None
        return comp

    def get(self, kind: str, name: str) -> Component:
        if kind not in self._by_kind:
            raise UnknownComponentError(f"unknown component kind {kind!r}; kinds are {', '.join(self.kinds)}")
        comp = self.find(kind, name)
        if comp is not None:
            return comp
        raise UnknownComponentError(self.unknown_message(kind, name))

    def unknown_message(self, kind: str, name: str) -> str:
        installed = self.names(kind)
        parts = [f"unknown {kind} {name!r}."]
        close = difflib.get_close_matches(name, installed + list(self._aliases[kind]), n=3, cutoff=0.6)
        if close:
            parts.append(f"Did you mean {', '.join(repr(c) for c in close)}?")
        parts.append(f"Installed {kind}s: {', '.join(installed) if installed else '(none)'}.")
        if self.load_errors:
            failed = "; ".join(f"{dist} {ver} ({err})" for dist, (ver, err) in sorted(self.load_errors.items()))
            parts.append(f"These plugins failed to import, and {name!r} may come from one of them: {failed}.")
        parts.append("Run `deepscope list` to see every component.")
        return " ".join(parts)
