"""The plot of ``deepscope sweep collect --x``: a metric against one key, a line per group, error bars.

One panel per metric. Each line is one combination of the other ``--by``
keys; each marker is a group's mean and its bar the sample standard deviation
over the points aggregated into it (no bar for a group of one). Numeric x
values are placed at their value (``--log-x`` for compressions and scales);
other values are evenly spaced categories in sweep order.
"""

from __future__ import annotations

from typing import Any

from .aggregate import CollectSpec


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def summary_figure(spec: CollectSpec, rows: list[dict[str, Any]], title: str = "") -> Any:
    """A matplotlib figure (Agg backend, nothing shown) of every metric against ``spec.x``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    assert spec.x is not None
    others = [k for k in spec.by if k != spec.x]
    xs_all = list(dict.fromkeys(r[spec.x] for r in rows))
    numeric = _numeric(xs_all)
    position = {repr(v): (v if numeric else i) for i, v in enumerate(xs_all)}
    lines: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        lines.setdefault(tuple(repr(row[k]) for k in others), []).append(row)
    fig, axes = plt.subplots(1, len(spec.metrics), figsize=(5.5 * len(spec.metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], spec.metrics):
        for members in lines.values():
            members = [r for r in members if r[f"{metric}/mean"] is not None]
            if not members:
                continue
            members.sort(key=lambda r: position[repr(r[spec.x])])
            label = ", ".join(f"{k.rsplit('.', 1)[-1]}={members[0][k]}" for k in others) or metric
            ax.errorbar([position[repr(r[spec.x])] for r in members], [r[f"{metric}/mean"] for r in members],
                        yerr=[r[f"{metric}/std"] or 0.0 for r in members], marker="o", capsize=3, label=label)
        if not numeric:
            ax.set_xticks(range(len(xs_all)), [str(v) for v in xs_all])
        if spec.log_x and numeric:
            ax.set_xscale("log")
        if spec.log_y:
            ax.set_yscale("log")
        ax.set_xlabel(spec.x)
        ax.set_ylabel(f"{metric} (mean ± std)")
        if others:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_png(fig: Any, path: Any) -> None:
    import matplotlib.pyplot as plt

    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
