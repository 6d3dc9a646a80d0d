"""deepscope-collapse: neural collapse on clean and adversarial data, and TRADES training.

Reproduces Su, Zhang, Tsilivis & Kempe, "On the Robustness of Neural Collapse
and the Neural Collapse of Robustness" (TMLR 2024, arXiv:2311.07444).
Importing this module is cheap: only attrs config classes; each factory is a
"module:attr" string the core imports on first use.
"""

from __future__ import annotations

from deepscope import hookimpl

from .configs import NCCAccuracyConfig, NeuralCollapseConfig, TradesConfig


@hookimpl
def deepscope_register_probes(register):
    register("neural-collapse", "deepscope_collapse.probes:NeuralCollapseProbe", NeuralCollapseConfig,
             doc="NC1-NC4 on clean, attacked and noisy data, clean/perturbed simplex alignment, "
                 "at the penultimate layer or every block (streaming).")
    register("ncc-accuracy", "deepscope_collapse.probes:NCCAccuracyProbe", NCCAccuracyConfig,
             doc="Nearest-class-centre accuracy (clean-data centres) on clean, attacked and noisy data.")


@hookimpl
def deepscope_register_trainers(register):
    register("trades", "deepscope_collapse.trainer:TradesTrainer", TradesConfig,
             doc="TRADES: CE(clean) + beta * KL(clean || KL-PGD adversarial), explicit BN mode for the "
                 "inner maximization.")
