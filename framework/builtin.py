"""The core's own plugin: extension points it fills itself."""

from __future__ import annotations

from .hookspecs import hookimpl


@hookimpl
def deepscope_register_prune_targets(register):
    register("direct", "deepscope.stages:prune_direct",
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
