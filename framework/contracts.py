"""The component contracts, written down once: what each kind's factory returns and the core calls.

The registration hooks (``deepscope.hookspecs``) point here. These are
``typing.Protocol`` s: a component need not inherit from them, only have the
methods (``isinstance`` works, as they are runtime-checkable). What a component
may touch in the run state (``state``) is in :mod:`deepscope.state`'s docstring
and ``docs/writing-a-plugin.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .data import DataBundle, DatasetInfo, SyntheticData
    from .state import RunState, StageContext

#: a pruner's output: a bool (or 0/1) mask per prunable parameter name (``state.prunable()``'s keys)
Masks = Dict[str, "torch.Tensor"]


@runtime_checkable
class DatasetFactory(Protocol):
    """``factory(config) -> DataBundle``: inputs in [0, 1], ``info`` with shape, classes, mean/std.

    A task sequence fills ``DataBundle.tasks`` and ``info.num_tasks``.
    """

    def __call__(self, config: Any) -> "DataBundle": ...


@runtime_checkable
class ModelFactory(Protocol):
    """``factory(config, info) -> nn.Module`` returning logits; the core puts normalization in front.

    Optional: ``set_task(t)`` (:class:`TaskAware`), ``features(x)``/``classifier`` for probes,
    ``prunable_parameters()``, and ``get_extra_state``/``set_extra_state`` for non-parametric state
    (a kernel predictor's support set), which checkpoints and resume carry like weights.
    """

    def __call__(self, config: Any, info: "DatasetInfo") -> "nn.Module": ...


@runtime_checkable
class Trainer(Protocol):
    """Trains ``state.model`` in place on ``state.data`` (the stage's data: real or distilled).

    Call ``ctx.epoch_end(metrics, checkpoint={...})`` once per epoch (it counts ``state.epoch``,
    runs periodic probes and checkpoints), ``state.apply_masks()`` after every optimizer step,
    and count optimizer steps in ``state.step``. To resume: ``start = ctx.resume(**objects)``.
    """

    def train(self, state: "RunState", ctx: "StageContext") -> None: ...


@runtime_checkable
class Pruner(Protocol):
    """Returns masks for ``state.prunable()`` with the requested ``density`` (fraction kept).

    The prune stage merges them into ``state.masks`` (pruning never regrows) and applies them.
    The config subclasses :class:`deepscope.PrunerConfig`.
    """

    def prune(self, state: "RunState", ctx: "StageContext", density: Optional[float]) -> Masks: ...


@runtime_checkable
class Attack(Protocol):
    """``perturb(model, x, y, target=None) -> x_adv`` inside the threat model and [0, 1].

    It must leave ``model.training`` as it found it. Optional ``setup(state, ctx)`` runs once per
    attack stage before the first batch (fit a surrogate, a kernel predictor...). The config
    subclasses :class:`deepscope.AttackConfig`.
    """

    def perturb(self, model: "nn.Module", x: "torch.Tensor", y: "torch.Tensor",
                target: Optional["torch.Tensor"] = None) -> "torch.Tensor": ...


@runtime_checkable
class SetupAttack(Attack, Protocol):
    """An attack that needs the run before attacking (transfer, surrogate and kernel attacks)."""

    def setup(self, state: "RunState", ctx: "StageContext") -> None: ...


@runtime_checkable
class Distiller(Protocol):
    """Returns a :class:`deepscope.SyntheticData`; the stage adds it as ``synthetic/<stage name>``.

    A long loop calls ``ctx.step_end(metrics, checkpoint={...}, synthetic=current)`` once per
    meta-step: it logs at the stage step, runs ``every_steps`` probes on ``current`` and
    checkpoints; to resume: ``start = ctx.resume(**objects)``.
    """

    def distill(self, state: "RunState", ctx: "StageContext") -> "SyntheticData": ...


@runtime_checkable
class Probe(Protocol):
    """Measures the run and returns metrics; it may log artifacts through ``ctx`` (figures, tables).

    It must leave the model as it found it (use ``with ctx.eval_mode(): ...``).
    """

    def measure(self, state: "RunState", ctx: "StageContext") -> Optional[Dict[str, float]]: ...


@runtime_checkable
class TaskAware(Protocol):
    """A model body that serves a sequence of tasks: ``set_task(t)`` selects task ``t`` (heads, supermasks),
    and ``task`` says which one is selected (so a probe can put it back).

    Task-specific masks are the model's own state; they never go into ``state.masks``.
    """

    task: int

    def set_task(self, task: int) -> None: ...


@runtime_checkable
class ChecksData(Protocol):
    """A component config that can tell, before any data is loaded, whether it fits the dataset.

    ``deepscope validate`` (and ``run``, before loading) calls ``config.check(shape)`` for the model and
    every stage component, with the :class:`deepscope.DataShape` the dataset's registration declares
    (``register(name, factory, config_cls, shape=fn)``); raise ``deepscope.ConfigError("...", key="param")``
    to report the parameter at fault.
    """

    def check(self, shape: Any) -> None: ...


@runtime_checkable
class ChecksStages(Protocol):
    """A stage component config that can tell, while the pipeline is parsed, whether the stages before it fit.

    ``deepscope validate`` (and ``run``, before anything loads) calls ``config.check_stages(earlier)`` for each
    ``[[stage]]`` component that defines it, with the :class:`deepscope.StageSpec` s of the stages before it in
    order (``.index``, ``.do``, ``.use``, ``.label``, ``.key``, ``.config``); for a periodic probe
    (``probes = [...]``) the list ends with the stage that runs it. It is skipped when an earlier stage
    did not parse. Raise ``deepscope.ConfigError("...", key="param")`` (or a ``ValueError``) to report the
    parameter at fault, shown as ``$.stage[i].param`` (``$.stage[i].probes[j].param`` for a periodic probe).
    """

    def check_stages(self, earlier: list) -> None: ...


@runtime_checkable
class StageRunner(Protocol):
    """What a stage kind runs: ``runner(state, stage, ctx)``, doing the stage's work through its component."""

    def __call__(self, state: "RunState", stage: Any, ctx: "StageContext") -> None: ...


__all__ = ["Attack", "ChecksData", "ChecksStages", "DatasetFactory", "Distiller", "Masks", "ModelFactory", "Probe", "Pruner", "SetupAttack",
           "StageRunner", "TaskAware", "Trainer"]
