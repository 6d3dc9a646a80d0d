"""Figures the neural-collapse probe logs: NC over training, and NC along the depth."""

from __future__ import annotations

from matplotlib.figure import Figure

PANELS = ("nc1", "nc2_equinorm", "nc2_equiangular", "nc3", "nc4")
SETS = ("clean", "perturbed", "noise")
STYLE = {"clean": "C0-o", "perturbed": "C3-s", "noise": "C7-^"}


def trajectory_figure(history: list[dict]) -> Figure:
    """One panel per NC metric against epochs, one line per measured set (clean / perturbed / noise)."""
    fig = Figure(figsize=(3.2 * len(PANELS), 3.0))
    axes = fig.subplots(1, len(PANELS))
    epochs = [h["epoch"] for h in history]
    for ax, metric in zip(axes, PANELS):
        for name in SETS:
            key = f"{name}/{metric}"
            if all(key in h for h in history):
                ax.plot(epochs, [h[key] for h in history], STYLE[name], label=name, markersize=3)
        if metric == "nc1":
            ax.set_yscale("log")
        ax.set_title(metric)
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def layer_profile_figure(metrics: dict[str, float], layers: list[str], epoch: int) -> Figure:
    """NC1, NC2 (equiangular) and NC4 at every read layer, one line per measured set."""
    panels = ("nc1", "nc2_equiangular", "nc4")
    fig = Figure(figsize=(4.0 * len(panels), 3.2))
    axes = fig.subplots(1, len(panels))
    xs = list(range(len(layers)))
    for ax, metric in zip(axes, panels):
        for name in SETS:
            keys = [f"{name}/{metric}" if layer == "penultimate" else f"{name}/layer/{layer}/{metric}"
                    for layer in layers]
            if all(k in metrics for k in keys):
                ax.plot(xs, [metrics[k] for k in keys], STYLE[name], label=name, markersize=3)
        if metric == "nc1":
            ax.set_yscale("log")
        ax.set_xticks(xs)
        ax.set_xticklabels(layers, rotation=60, fontsize=6, ha="right")
        ax.set_title(f"{metric} by layer (epoch {epoch})")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
