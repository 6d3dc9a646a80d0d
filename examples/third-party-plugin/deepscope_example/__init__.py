"""An example deepscope plugin: a layerwise magnitude pruner and a zero-weight probe.

This module is imported whenever deepscope starts, so it stays cheap: config
classes here, the torch code in ``impl.py`` behind lazy "module:attr" strings.
"""

from __future__ import annotations

import attrs

from deepscope import PrunerConfig, hookimpl, param


@attrs.define(kw_only=True)
class LayerwiseMagnitudeConfig(PrunerConfig):
    """Keep the largest-magnitude weights of every layer, the same fraction in each."""

    keep_last_layer: bool = param(True, doc="never prune the classifier layer")


@attrs.define
class ZeroFractionConfig:
    """Fraction of exactly-zero weights, overall and per layer."""

    per_layer: bool = param(True, doc="also log one metric per prunable parameter")


@hookimpl
def deepscope_register_pruners(register):
    register("layerwise-magnitude", "deepscope_example.impl:LayerwiseMagnitude", LayerwiseMagnitudeConfig)


@hookimpl
def deepscope_register_probes(register):
    register("zero-fraction", "deepscope_example.impl:ZeroFraction", ZeroFractionConfig)
