"""One registry of every component, fed only by the registration hooks.

Names are short and stable (``pgd``, ``lenet-300-100``). A duplicate name
raises and names both plugins; ``plugin:name`` picks one explicitly. An unknown
name answers with close matches, the installed names of that kind and any
plugin that failed to import.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable, Iterable

import attrs

from .errors import DuplicateComponentError, UnknownComponentError


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

    @property
    def qualified_name(self) -> str:
        return f"{self.plugin}:{self.name}"

    def resolve_factory(self) -> Callable:
        if isinstance(self.factory, str):
            module, _, attr = self.factory.partition(":")
            obj = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
            self.factory = obj
        return self.factory

    def build(self, *args, **kwargs):
        return self.resolve_factory()(*args, **kwargs)

    @property
    def summary(self) -> str:
        text = self.doc or (self.config_cls.__doc__ if self.config_cls else "") or ""
        return text.strip().splitlines()[0] if text.strip() else ""


class Registry:
    """Components by kind and name; also remembers plugins that failed to load."""

    def __init__(self, kinds: Iterable[str]):
        self.kinds = tuple(kinds)
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
                     doc: str = "", requires: Iterable[str] = (), provides: Iterable[str] = ()) -> None:
            if not isinstance(name, str) or not name or ":" in name:
                raise ValueError(f"{plugin}: component names must be non-empty strings without ':' (got {name!r})")
            if config_cls is not None and not attrs.has(config_cls):
                raise TypeError(f"{plugin}: {kind} {name!r}: config_cls must be an attrs class")
            self.add(Component(kind, name, factory, config_cls, plugin, version, tuple(aliases), doc,
                               tuple(requires), tuple(provides)), strict=self.strict)

        return register

    # -- looking up ---------------------------------------------------------
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
