"""Probe ``ntk-lazy``: how much the empirical NTK moves during training, against width.

For each width, fresh networks of the chosen family are trained by full-batch MSE gradient descent on a
fixed class-balanced batch; the relative change ||K_T - K_0||_F / ||K_0||_F of their (trace) kernel on that
batch is reported. In the NTK parameterization it falls like 1/sqrt(width) (the lazy regime of the lecture
notes): the log-log slope is logged beside the per-width values, and a plot on tracked runs.
"""

from __future__ import annotations

import math

import torch

from deepscope import ConfigError

from .dynamics import gd_mse, training_batch
from .empirical import empirical_ntk

SEED_OFFSET = 5000  # network i of each width: run seed + 5000 + i


def relative_change(before: torch.Tensor, after: torch.Tensor) -> float:
    return ((after - before).norm() / before.norm()).item()


def loglog_slope(widths, values) -> float:
    """Least-squares slope of log(values) against log(widths)."""
    lx = torch.tensor([math.log(w) for w in widths], dtype=torch.float64)
    ly = torch.tensor([math.log(v) for v in values], dtype=torch.float64)
    lx, ly = lx - lx.mean(), ly - ly.mean()
    return float((lx @ ly) / (lx @ lx))


class NTKLazy:
    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx) -> dict:
        cfg = self.config
        if len(cfg.widths) < 2 or any(w <= 0 for w in cfg.widths):
            raise ConfigError(f"widths must list at least two positive widths, not {cfg.widths!r}", key="widths")
        x, targets = training_batch(state, cfg.n, "centered")
        base = cfg.network.resolved()
        if cfg.width_key not in base:
            raise ConfigError(f"model {base['use']!r} has no parameter {cfg.width_key!r}; set width_key to its "
                              "width parameter", key="width_key")
        changes = {}
        for width in cfg.widths:
            values = []
            for i in range(cfg.seeds):
                model = state.build_model({**base, cfg.width_key: width}, seed=state.seed + SEED_OFFSET + i)
                model.eval()
                before = empirical_ntk(model, x, method=cfg.method, mode="trace", chunk_size=cfg.chunk_size,
                                       dtype=torch.float64)
                gd_mse(model, x, targets, lr=cfg.lr, steps=cfg.steps)
                after = empirical_ntk(model, x, method=cfg.method, mode="trace", chunk_size=cfg.chunk_size,
                                       dtype=torch.float64)
                values.append(relative_change(before, after))
            changes[width] = sum(values) / len(values)
        metrics = {f"change_{w}": v for w, v in changes.items()}
        metrics["slope"] = loglog_slope(list(changes), list(changes.values()))
        if state.tracker is not None:
            self._plot(ctx, changes)
        return metrics

    def _plot(self, ctx, changes: dict) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        widths = list(changes)
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.loglog(widths, list(changes.values()), "o-", label="measured")
        ref = changes[widths[0]] * (widths[0] / torch.tensor(widths, dtype=torch.float64)).sqrt()
        ax.loglog(widths, ref.tolist(), "--", label="1/sqrt(width)")
        ax.set_xlabel("width")
        ax.set_ylabel("||K_T - K_0|| / ||K_0||")
        ax.legend()
        ctx.log_figure(fig, "ntk_lazy.png")
