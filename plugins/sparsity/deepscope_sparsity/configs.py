"""Config classes of the sparsity plugin (attrs only: cheap to import)."""

from __future__ import annotations

from typing import Literal, Optional

import attrs

from deepscope import PrunerConfig, param, positive

Quota = Literal["uniform", "uniform-plus", "erk", "igq"]


@attrs.define(kw_only=True)
class RandomPrunerConfig(PrunerConfig):
    """Random pruning with a layerwise quota; masks at growing density are nested."""

    quota: Quota = param("uniform", doc="layerwise allocation: uniform | uniform-plus | erk | igq")
    seed: Optional[int] = param(None, doc="seed of the random scores (default: the run's seed)")


@attrs.define(kw_only=True)
class MagnitudePrunerConfig(PrunerConfig):
    """Smallest |w| pruned, globally or within layerwise quotas (after training: lottery-ticket style)."""

    quota: Literal["global", "uniform", "uniform-plus", "erk", "igq"] = param(
        "global", doc="global ranking, or a layerwise allocation: uniform | uniform-plus | erk | igq")
    rewind: bool = param(False, doc="after pruning, reset surviving weights to their initial values")


@attrs.define(kw_only=True)
class LampPrunerConfig(PrunerConfig):
    """LAMP scores (layer-adaptive magnitude), pruned globally."""

    rewind: bool = param(False, doc="after pruning, reset surviving weights to their initial values")


@attrs.define(kw_only=True)
class SnipPrunerConfig(PrunerConfig):
    """SNIP connection sensitivity |g * w| from a sample of training data."""

    samples: int = param(1280, doc="training examples drawn for the gradient (official: 300 batches)",
                         validator=positive)
    batch_size: int = param(128, doc="minibatch size for the gradient", validator=positive)
    seed: Optional[int] = param(None, doc="seed of the sample (default: the run's seed)")


@attrs.define(kw_only=True)
class IterativeSnipPrunerConfig(PrunerConfig):
    """SNIP repeated with an exponential density schedule, one minibatch per iteration."""

    iterations: int = param(300, doc="pruning iterations (official: 300)", validator=positive)
    batch_size: int = param(128, doc="examples per iteration", validator=positive)
    seed: Optional[int] = param(None, doc="seed of the minibatches (default: the run's seed)")


@attrs.define(kw_only=True)
class GraspPrunerConfig(PrunerConfig):
    """GraSP: keep the weights whose removal would most reduce gradient flow."""

    samples: int = param(1280, doc="training examples drawn for g and Hg", validator=positive)
    batch_size: int = param(128, doc="minibatch size", validator=positive)
    temperature: float = param(200.0, doc="softmax temperature of the loss (GraSP: 200)", validator=positive)
    seed: Optional[int] = param(None, doc="seed of the sample (default: the run's seed)")


@attrs.define(kw_only=True)
class SynflowPrunerConfig(PrunerConfig):
    """SynFlow: data-free iterative pruning by synaptic flow, exponential schedule."""

    iterations: int = param(100, doc="pruning iterations (Tanaka et al.: 100)", validator=positive)
    dtype: Literal["float64", "float32"] = param(
        "float64", doc="precision of the path sums: float32 is faster (the reference's), but its scores "
                       "overflow on deep or wide nets and near-ties may rank differently")


def random_within(source: type) -> type:
    """The config of ``random/<pruner>``: the source pruner's parameters plus the seed of the random scores.

    Vysogorets & Kempe's ``random/snip``, ``random/synflow``...: the source pruner
    only decides how many weights each layer keeps; which ones is random.
    """
    name = source.__name__.replace("PrunerConfig", "")

    @attrs.define(kw_only=True)
    class RandomWithinConfig(source):
        random_seed: Optional[int] = param(None, doc="seed of the random choice inside each layer's quota "
                                                     "(default: the run's seed)")

    RandomWithinConfig.__name__ = RandomWithinConfig.__qualname__ = f"RandomWithin{name}Config"
    RandomWithinConfig.__doc__ = (f"Random pruning with the layerwise densities {name} would give "
                                  f"(random/{name.lower()}).")
    return RandomWithinConfig


RandomWithinSnipConfig = random_within(SnipPrunerConfig)
RandomWithinIterativeSnipConfig = random_within(IterativeSnipPrunerConfig)
RandomWithinGraspConfig = random_within(GraspPrunerConfig)
RandomWithinSynflowConfig = random_within(SynflowPrunerConfig)
RandomWithinMagnitudeConfig = random_within(MagnitudePrunerConfig)
RandomWithinLampConfig = random_within(LampPrunerConfig)


@attrs.define
class EffectiveSparsityProbeConfig:
    """Direct and effective sparsity and compression of the current masks, overall and per layer."""

    plot: bool = param(True, doc="log a per-layer bar chart of direct vs effective density")
    log_masks: bool = param(False, doc="log the effective masks as a tensor artifact")
