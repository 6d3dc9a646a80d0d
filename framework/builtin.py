"""The core's own plugin: extension points it fills itself."""

from __future__ import annotations

from .hookspecs import hookimpl


@hookimpl
def deepscope_register_prune_targets(register):
    register("direct", "framework.stages:prune_direct",
             doc="the mask itself has the requested sparsity or compression")
