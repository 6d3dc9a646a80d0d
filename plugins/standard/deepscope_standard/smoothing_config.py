"""Config of the ``smoothing`` probe (randomized-smoothing certificates); no torch import here."""

from __future__ import annotations

from typing import Optional

import attrs

from deepscope import in_range, param, positive


@attrs.define(kw_only=True)
class SmoothingConfig:
    """Certified L2 accuracy of the Gaussian-smoothed model (Cohen, Rosenfeld & Kolter 2019, CERTIFY)."""

    sigma: float = param(0.25, doc="std of the Gaussian noise added to inputs, in [0, 1] pixel units",
                         validator=positive)
    n0: int = param(100, doc="noise samples that pick each example's top class", validator=positive)
    n: int = param(1000, doc="noise samples that bound the top class's probability (the paper: 100,000)",
                   validator=positive)
    alpha: float = param(0.001, doc="failure probability of each certificate (one-sided Clopper-Pearson)",
                         validator=in_range(0, 1, low_open=True, high_open=True))
    radii: list[float] = param(factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0],
                               doc="L2 radii at which certified accuracy is logged")
    n_examples: Optional[int] = param(100, doc="certify the first N test examples (None: all)", validator=positive)
    sample_batch: int = param(1000, doc="noisy copies per forward pass", validator=positive)
    seed: int = param(0, doc="seed of the noise")


def register(register):
    register("smoothing", "deepscope_standard.smoothing:SmoothingCertify", SmoothingConfig,
             doc="Randomized smoothing (Cohen et al. 2019): certified L2 accuracy against radius, abstentions.")
