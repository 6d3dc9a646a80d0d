"""Config classes of the basic probes (``accuracy``, ``weights``; ``synthetic-accuracy`` is in distill_config); no torch here."""

from __future__ import annotations

from typing import Optional

import attrs

from deepscope import param, positive


@attrs.define(kw_only=True)
class AccuracyConfig:
    """Test accuracy, mean cross-entropy and expected calibration error of the current model."""

    n_examples: Optional[int] = param(None, doc="use the first N test examples (default: the whole test set)",
                                      validator=positive)
    bins: int = param(15, doc="equal-width confidence bins of the expected calibration error", validator=positive)
    batch_size: int = param(1000, doc="evaluation batch size", validator=positive)


@attrs.define(kw_only=True)
class WeightsConfig:
    """Per-parameter L2 norms and parameter counts (total, prunable, nonzero)."""

    norms: bool = param(True, doc="log norm/<parameter name> for every parameter")


def register(register):
    register("accuracy", "deepscope_standard.probes:AccuracyProbe", AccuracyConfig,
             doc="Test accuracy, loss and expected calibration error (ECE).")
    register("weights", "deepscope_standard.probes:WeightsProbe", WeightsConfig,
             doc="Per-layer L2 norms and parameter counts (total, prunable, nonzero).")
