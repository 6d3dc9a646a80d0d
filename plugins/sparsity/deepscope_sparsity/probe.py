"""The ``effective-sparsity`` probe: how much of the network the masks really remove."""

from __future__ import annotations

import math

from .effective import EffectiveMasks, sparsity_report
from .masking import alive_masks


class EffectiveSparsityProbe:
    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx):
        masks = alive_masks(state)
        effective = EffectiveMasks(state.model, state.info.input_shape, list(masks))(masks)
        report = sparsity_report(masks, effective)
        if ctx is not None and self.config.plot:
            ctx.log_figure(layer_plot(report, list(masks)), "effective_sparsity.png")
        if ctx is not None and self.config.log_masks:
            ctx.log_tensors("effective_masks", effective)
        return report


def layer_plot(report: dict[str, float], names: list[str]):
    """Per-layer remaining fraction, direct vs effective, on a log axis."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    floor = 1e-7
    direct = [max(1 - report[f"direct_sparsity/{n}"], floor) for n in names]
    effective = [max(1 - report[f"effective_sparsity/{n}"], floor) for n in names]
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(names) + 2), 3.5))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], direct, width=0.4, label="direct")
    ax.bar([x + 0.2 for x in xs], effective, width=0.4, label="effective")
    ax.set_yscale("log")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([n.removeprefix("body.").removesuffix(".weight") for n in names], rotation=60, ha="right")
    ax.set_ylabel("fraction of weights remaining")
    eff = report["effective_compression"]
    ax.set_title(f"direct compression {report['direct_compression']:.3g}, "
                 f"effective {'inf' if math.isinf(eff) else f'{eff:.3g}'}")
    ax.legend()
    return fig
