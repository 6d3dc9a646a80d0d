"""deepscope-robust-data: robustness from data alone (Tsilivis, Su & Kempe, arXiv:2207.11727).

Adversarial KIP meta-learns a small dataset whose kernel regression resists PGD; ``synthetic-krr`` scores a
distilled set in kernel regression beside the network attack stages. The generic pieces the paper's
check needs (``square``, ``transfer``, the ``attack-gap`` summary) live in the standard plugin, the
kernels in ``deepscope-ntk``. Importing this module is cheap: factories are "module:attr" strings.
"""

from __future__ import annotations

from deepscope import hookimpl

from .configs import AdversarialKIPConfig, SyntheticKRRConfig


@hookimpl
def deepscope_register_distillers(register):
    register("adversarial-kip", "deepscope_robust_data.adversarial_kip:AdversarialKIP", AdversarialKIPConfig,
             doc="KIP with its target loss at PGD points of the current kernel predictor (support fixed inside, "
                 "Danskin outside); eps = 0 is kip exactly; steps = 0 is the random-real draw")


@hookimpl
def deepscope_register_probes(register):
    register("synthetic-krr", "deepscope_robust_data.synthetic_krr:SyntheticKRR", SyntheticKRRConfig,
             doc="kernel regression fitted on a distilled set: real test accuracy, clean and under a nested "
                 "attack on the predictor")
