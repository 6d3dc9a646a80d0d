"""deepscope-ratbptt: dataset distillation by Random Truncated BPTT, and Boost-DD.

*Embarrassingly Simple Dataset Distillation* (Feng, Vedantam & Kempe, ICLR 2024, arXiv:2311.07025):
unroll a random number of inner steps on the synthetic set, backpropagate through a window of the last
ones, and learn the images (and labels) from the loss on real data. Boost-DD grows the set in nested
blocks so that every prefix is a good set for its budget. Importing this module is cheap: factories
are "module:attr" strings loaded on first use. The public Python API is ``deepscope_ratbptt.unroll``
(``unroll``, ``InnerOptimizer``) for plugins that unroll inner loops of their own.
"""

from __future__ import annotations

from deepscope import hookimpl

from .configs import BoostDDConfig, RatBPTTConfig


@hookimpl
def deepscope_register_distillers(register):
    register("rat-bptt", "deepscope_ratbptt.distiller:RatBPTT", RatBPTTConfig,
             doc="RaT-BPTT: fresh network per meta-step, graph-free prefix, differentiable window, real-batch "
                 "loss, EMA-clipped Adam on the images (and labels)")
    register("boost-dd", "deepscope_ratbptt.distiller:BoostDD", BoostDDConfig,
             doc="Boost-DD: nested blocks distilled in turn with RaT-BPTT; earlier blocks join every inner "
                 "batch at beta x lr, so every block prefix is a budget")
