"""The core's own plugin: its component kinds, stage kinds and extension points.

Registered through the same hooks a plugin would use, so a plugin-added kind
is no different from these.
"""

from __future__ import annotations

from .bases import AttackConfig, PrunerConfig
from .hookspecs import hookimpl

_STAGES = "deepscope.stages"


@hookimpl
def deepscope_register_component_kinds(register):
    register("dataset", doc="train/test data in [0, 1] and its info", contract="deepscope.contracts.DatasetFactory")
    register("model", doc="an nn.Module factory returning logits", contract="deepscope.contracts.ModelFactory")
    register("trainer", doc="a training procedure", contract="deepscope.contracts.Trainer")
    register("pruner", doc="a mask producer", config_base=PrunerConfig, contract="deepscope.contracts.Pruner")
    register("attack", doc="an adversarial attack", config_base=AttackConfig, contract="deepscope.contracts.Attack")
    register("distiller", doc="a synthetic-data producer", contract="deepscope.contracts.Distiller")
    register("probe", doc="a measurement", contract="deepscope.contracts.Probe")
    register("prune-target", doc="how a prune stage meets its target", listed=False)
    register("executor", doc="where sweep points run", listed=False)


@hookimpl
def deepscope_register_stage_kinds(register):
    register("train", "trainer", f"{_STAGES}:run_train", provides=("trained",), probes=True,
             doc="train the run's model in place")
    register("prune", "pruner", f"{_STAGES}:run_prune", provides=("masks",),
             doc="prune the run's model; masks stay applied and never regrow")
    register("attack", "attack", f"{_STAGES}:run_attack",
             doc="attack the first n_examples test examples; clean and robust accuracy")
    register("distill", "distiller", f"{_STAGES}:run_distill", provides=("synthetic",), probes=True,
             selects_data=False, doc="distill a synthetic training set; later stages use it with data = \"synthetic\"")
    register("probe", "probe", f"{_STAGES}:run_probe_stage", aliases=("evaluate",), doc="measure the run")


@hookimpl
def deepscope_register_prune_targets(register):
    register("direct", f"{_STAGES}:prune_direct",
             doc="the mask itself has the requested sparsity or compression")


@hookimpl
def deepscope_register_executors(register):
    from .sweep.executor_config import InlineConfig, LocalConfig, SlurmConfig

    register("inline", "deepscope.sweep.executors:InlineExecutor", InlineConfig,
             doc="every point in this process, one after another")
    register("local", "deepscope.sweep.executors:LocalExecutor", LocalConfig,
             doc="N worker processes on this machine (default: one per GPU, else 1)")
    register("slurm", "deepscope.sweep.executors:SlurmExecutor", SlurmConfig,
             doc="one SLURM job array through submitit (the slurm extra of deepscope)")
