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

#: component kind -> the registration hook that provides it
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
def deepscope_register_datasets(register):
    """Register datasets: ``register(name, factory, config_cls, *, aliases=(), doc=None)``.

    ``factory(config) -> deepscope.DataBundle`` with inputs in [0, 1].
    """


@hookspec
def deepscope_register_models(register):
    """Register models: ``factory(config, info: DatasetInfo) -> torch.nn.Module`` returning logits."""


@hookspec
def deepscope_register_trainers(register):
    """Register trainers: ``factory(config)`` returns an object with ``train(state, ctx)``."""


@hookspec
def deepscope_register_pruners(register):
    """Register pruners: ``factory(config)`` returns an object with ``prune(state, ctx, density) -> masks``."""


@hookspec
def deepscope_register_attacks(register):
    """Register attacks: ``factory(config)`` returns an object with ``perturb(model, x, y, target=None)``."""


@hookspec
def deepscope_register_distillers(register):
    """Register distillers: ``factory(config)`` returns an object with ``distill(state, ctx) -> SyntheticData``."""


@hookspec
def deepscope_register_probes(register):
    """Register probes: ``factory(config)`` returns an object with ``measure(state, ctx) -> dict``."""


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
