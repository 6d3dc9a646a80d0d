"""Config classes of the basic probes (``accuracy``, ``weights``, ``synthetic-accuracy``); no torch here."""

from __future__ import annotations

from typing import Optional

import attrs

from deepscope import param, positive

from .trainers_config import TrainConfig


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


@attrs.define(kw_only=True)
class SyntheticAccuracyConfig(TrainConfig):
    """Test accuracy of fresh models trained only on the synthetic (distilled) set: mean and std."""

    n_models: int = param(3, doc="fresh models trained from different seeds", validator=positive)
    epochs: int = param(300, doc="passes over the synthetic set per model", validator=positive)
    lr: float = param(0.01, doc="learning rate, unless the synthetic set carries a learned one",
                      validator=positive)
    use_synthetic_lr: bool = param(True, doc="use the synthetic set's learned lr when it has one")


def register(register):
    register("accuracy", "deepscope_standard.probes:AccuracyProbe", AccuracyConfig,
             doc="Test accuracy, loss and expected calibration error (ECE).")
    register("weights", "deepscope_standard.probes:WeightsProbe", WeightsConfig,
             doc="Per-layer L2 norms and parameter counts (total, prunable, nonzero).")
    register("synthetic-accuracy", "deepscope_standard.probes:SyntheticAccuracyProbe", SyntheticAccuracyConfig,
             doc="Train fresh models on the distilled set; mean and std of their test accuracy.",
             requires=("synthetic",))
