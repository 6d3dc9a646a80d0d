"""Records of the kinds a pipeline is made of: component kinds and stage kinds (``do``).

Both are registered through hooks, the core's own the same way as a plugin's,
so a plugin can add a component kind (``kernel``) or a stage kind
(``do = "fit"``) without touching the core. No torch import here: ``validate``
reads these records, and a stage kind's runner is a lazy ``"module:attr"``.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

import attrs


def resolve(target: Any) -> Any:
    """A ``"module:attr"`` string imported, or the object itself."""
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@attrs.define(frozen=True)
class ComponentKind:
    """A kind of component (``pruner``); its configs must subclass ``config_base`` when one is set.

    ``contract`` names the Protocol (in :mod:`deepscope.contracts`) that its
    factories' products follow; ``deepscope list`` and ``show`` print it.
    """

    name: str
    doc: str = ""
    config_base: type | None = None
    contract: str = ""
    #: the per-kind registration hook, e.g. ``deepscope_register_pruners`` (none for plugin-added kinds,
    #: whose components register through ``deepscope_register_components``)
    hook: str | None = None
    #: pipeline components (listed by ``deepscope list``); False for extension points (prune targets...)
    listed: bool = True
    plugin: str = ""


@attrs.define(frozen=True)
class StageKind:
    """What one ``do`` means: which component kind it uses and who runs it.

    ``runner(state, stage, ctx)`` does the stage's work through the component;
    ``provides`` names what later stages may ``require`` (``trained``,
    ``masks``, ``synthetic``); ``probes`` says whether the stage runs periodic
    probes (``probes = [{ use, every }]`` per epoch, ``every_steps`` per step);
    ``selects_data`` whether it takes the ``data = "synthetic[/name]"`` key.
    A stage kind that provides ``synthetic`` adds its output to the run as the
    named dataset ``synthetic/<stage name>``.
    """

    name: str
    component_kind: str
    runner: Any  # callable(state, stage, ctx) or "module:attr"
    provides: tuple[str, ...] = ()
    probes: bool = False
    selects_data: bool = True
    aliases: tuple[str, ...] = ()
    doc: str = ""
    plugin: str = ""

    def resolve_runner(self) -> Callable:
        return resolve(self.runner)


def make_kind_register(table: dict, plugin: str) -> Callable:
    """The ``register`` callback of ``deepscope_register_component_kinds``."""

    def register(name: str, *, doc: str = "", config_base: type | None = None, contract: str = "",
                 listed: bool = True) -> None:
        _check_name(name, plugin, "component kind")
        if name in table:
            raise ValueError(f"{plugin}: component kind {name!r} is already registered by {table[name].plugin}")
        if config_base is not None and not attrs.has(config_base):
            raise TypeError(f"{plugin}: component kind {name!r}: config_base must be an attrs class")
        table[name] = ComponentKind(name, doc, config_base, contract, None, listed, plugin)

    return register


def make_stage_register(table: dict, alias_table: dict, plugin: str) -> Callable:
    """The ``register`` callback of ``deepscope_register_stage_kinds``."""

    def register(name: str, component_kind: str, runner: Any, *, provides: tuple[str, ...] = (),
                 probes: bool = False, selects_data: bool = True, aliases: tuple[str, ...] = (),
                 doc: str = "") -> None:
        for label in (name, *aliases):
            _check_name(label, plugin, "stage kind")
            owner = table.get(label) or table.get(alias_table.get(label, ""))
            if owner is not None:
                raise ValueError(f"{plugin}: stage kind {label!r} (do = \"{label}\") is already registered by "
                                 f"{owner.plugin}")
        kind = StageKind(name, component_kind, runner, tuple(provides), probes, selects_data, tuple(aliases),
                         doc, plugin)
        table[name] = kind
        for alias in kind.aliases:
            alias_table[alias] = name

    return register


def _check_name(name: Any, plugin: str, what: str) -> None:
    if not isinstance(name, str) or not name or ":" in name or "/" in name:
        raise ValueError(f"{plugin}: {what} names must be non-empty strings without ':' or '/' (got {name!r})")
