"""deepscope-sparsity: pruning at initialization through the lens of effective sparsity.

Reproduces Vysogorets & Kempe, "Connectivity Matters: Neural Network Pruning
Through the Lens of Effective Sparsity" (JMLR 2023, arXiv:2107.02306). Only
hook implementations and config classes live here; the torch code is loaded
lazily through "module:attr" factories.
"""

from __future__ import annotations

from deepscope import hookimpl

from . import configs as C

_P = "deepscope_sparsity.pruners"
RANDOM_WITHIN = {"snip": "Snip", "iterative-snip": "IterativeSnip", "grasp": "Grasp", "synflow": "Synflow",
                 "magnitude": "Magnitude", "lamp": "Lamp"}


@hookimpl
def deepscope_register_pruners(register):
    register("random", f"{_P}:RandomPruner", C.RandomPrunerConfig,
             doc="random pruning within layerwise quotas (uniform, uniform-plus, erk, igq); nested masks")
    register("magnitude", f"{_P}:MagnitudePruner", C.MagnitudePrunerConfig,
             doc="smallest |w| pruned, globally or per quota; optional rewind to init")
    register("lamp", f"{_P}:LampPruner", C.LampPrunerConfig, doc="layer-adaptive magnitude pruning (LAMP)")
    register("snip", f"{_P}:SnipPruner", C.SnipPrunerConfig, doc="SNIP connection sensitivity at init")
    register("iterative-snip", f"{_P}:IterativeSnipPruner", C.IterativeSnipPrunerConfig,
             doc="SNIP iterated with an exponential schedule")
    register("grasp", f"{_P}:GraspPruner", C.GraspPrunerConfig, doc="GraSP: preserve gradient flow")
    register("synflow", f"{_P}:SynflowPruner", C.SynflowPrunerConfig,
             doc="SynFlow: iterative data-free synaptic-flow pruning (100 iterations)")
    for name, suffix in RANDOM_WITHIN.items():
        register(f"random/{name}", f"{_P}:RandomWithin{suffix}", getattr(C, f"RandomWithin{suffix}Config"),
                 doc=f"random pruning inside the layerwise densities {name} chooses (quota transfer)")


@hookimpl
def deepscope_register_prune_targets(register):
    register("effective", "deepscope_sparsity.effective_target:prune_effective",
             doc="bisection over the pruner's budget until the effective sparsity meets the request")


@hookimpl
def deepscope_register_probes(register):
    register("effective-sparsity", "deepscope_sparsity.probe:EffectiveSparsityProbe",
             C.EffectiveSparsityProbeConfig,
             doc="direct vs effective sparsity and compression, overall and per layer")
