"""The hooks a deepscope plugin may implement.

Registration hooks receive a ``register`` callback (llm/tox style) so the core
can list every component and detect collisions; lifecycle hooks let plugins
observe runs. Specs only ever gain arguments, and pluggy lets an
implementation take fewer arguments than its spec, so old plugins keep working.
"""

from __future__ import annotations

import pluggy

PROJECT = "deepscope"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: the core's component kinds -> their registration hooks (plugins may add kinds: see
#: ``deepscope_register_component_kinds``); every contract is a Protocol in :mod:`deepscope.contracts`
KIND_HOOKS = {
    "dataset": "deepscope_register_datasets",
    "model": "deepscope_register_models",
    "trainer": "deepscope_register_trainers",
    "pruner": "deepscope_register_pruners",
    "attack": "deepscope_register_attacks",
    "distiller": "deepscope_register_distillers",
    "probe": "deepscope_register_probes",
}

#: extension points that are not pipeline components
EXTRA_HOOKS = {
    "prune-target": "deepscope_register_prune_targets",
    "executor": "deepscope_register_executors",
}


@hookspec
def deepscope_register_component_kinds(register):
    """Add component kinds: ``register(name, *, doc="", config_base=None, contract="", listed=True)``.

    Components of a plugin-added kind register through :func:`deepscope_register_components`.
    ``config_base``: every component config of the kind must subclass it (checked at registration).
    ``contract``: the dotted name of the Protocol its components follow, shown by ``deepscope show``.
    """


@hookspec
def deepscope_register_stage_kinds(register):
    """Add stage kinds (``do``): ``register(name, component_kind, runner, *, provides=(), probes=False,
    selects_data=True, aliases=(), doc="")``.

    ``runner(state, stage, ctx)`` (a callable or ``"module:attr"``) runs one stage through its
    component; see :class:`deepscope.kinds.StageKind`. The core registers train, prune, attack,
    distill and probe (alias evaluate) through this same hook.
    """


@hookspec
def deepscope_register_components(register):
    """Register components of any kind: ``register(kind, name, factory, config_cls=None, **options)``.

    The options are those of the per-kind hooks below; this is the way to register components of a
    kind a plugin added.
    """


@hookspec
def deepscope_register_datasets(register):
    """Register datasets: ``register(name, factory, config_cls=None, *, aliases=(), doc="", requires=(),
    provides=())``, the signature every per-kind hook's ``register`` shares.

    ``factory`` (a callable or a lazy ``"module:attr"``) follows :class:`deepscope.contracts.DatasetFactory`:
    ``factory(config) -> deepscope.DataBundle`` with inputs in [0, 1]. ``config_cls`` is an attrs class
    whose fields are the TOML parameters; ``requires``/``provides`` name what the component needs from
    earlier stages or offers later ones.
    """


@hookspec
def deepscope_register_models(register):
    """Register models: :class:`deepscope.contracts.ModelFactory`, ``factory(config, info) -> nn.Module``.

    The module returns logits for inputs normalized by the core; task-aware models add ``set_task(t)``
    (:class:`deepscope.contracts.TaskAware`); non-parametric ones keep state in ``get_extra_state``.
    """


@hookspec
def deepscope_register_trainers(register):
    """Register trainers: ``factory(config)`` returns a :class:`deepscope.contracts.Trainer`."""


@hookspec
def deepscope_register_pruners(register):
    """Register pruners: ``factory(config)`` returns a :class:`deepscope.contracts.Pruner`.

    Configs subclass :class:`deepscope.PrunerConfig` (checked at registration).
    """


@hookspec
def deepscope_register_attacks(register):
    """Register attacks: ``factory(config)`` returns a :class:`deepscope.contracts.Attack`.

    Configs subclass :class:`deepscope.AttackConfig` (checked at registration).
    """


@hookspec
def deepscope_register_distillers(register):
    """Register distillers: ``factory(config)`` returns a :class:`deepscope.contracts.Distiller`."""


@hookspec
def deepscope_register_probes(register):
    """Register probes: ``factory(config)`` returns a :class:`deepscope.contracts.Probe`."""


@hookspec
def deepscope_register_prune_targets(register):
    """Register how a prune stage meets its ``target``: ``register(name, resolver, doc=...)``.

    ``resolver(pruner, state, ctx, density) -> masks``; the core provides ``direct``.
    """


@hookspec
def deepscope_register_executors(register):
    """Register sweep executors: ``register(name, factory, config_cls, doc=...)``."""


@hookspec
def deepscope_run_started(run):
    """A pipeline run started; ``run`` is the :class:`deepscope.RunState`."""


@hookspec
def deepscope_run_finished(run, status):
    """A run ended with ``status`` in FINISHED, FAILED or KILLED."""


@hookspec
def deepscope_stage_started(run, stage):
    """A stage (a :class:`deepscope.config.StageSpec`) is about to run."""


@hookspec
def deepscope_stage_finished(run, stage, metrics):
    """A stage ended; ``metrics`` is the last dict of metrics it logged."""


@hookspec
def deepscope_metrics_logged(run, metrics, step):
    """Metrics (full keys, e.g. ``attack/pgd/robust_acc``) were logged at ``step``."""
