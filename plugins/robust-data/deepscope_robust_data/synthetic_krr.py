"""Probe ``synthetic-krr``: kernel regression fitted on a distilled set, clean and under a nested attack.

The paper deploys its datasets in kernel regression and in neural networks. This probe gives the kernel
side in the same pipeline as the network's attack stages: a fresh kernel-regression (the nested ``krr``)
is fitted on the set, then scored on real test images, clean and under the nested attack run against the
fitted predictor itself (white-box). As a periodic probe of a distill stage it follows the current iterate.
"""

from __future__ import annotations

import torch

from deepscope import ConfigError
from deepscope_ntk import KernelRegression


class SyntheticKRR:
    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx) -> dict:
        cfg = self.config
        try:
            chosen = state.synthetic_set(cfg.set)
        except LookupError as exc:
            raise ConfigError(f"{exc}. Set `set` to \"synthetic\" or \"synthetic/<stage name>\" of a distill stage "
                              "that runs before this probe (or run it as a periodic probe of the distill stage).",
                              key="set") from None
        model = state.build_model(cfg.krr, seed=state.seed)
        if not isinstance(model.body, KernelRegression):
            raise ConfigError(f"krr must be a kernel-regression model, not {type(model.body).__name__}", key="krr")
        x = chosen.x.to(state.device)
        support = x if chosen.space == "input" else model.to_input(x)
        with torch.no_grad():
            fit = model.body.fit(support, chosen.y.to(state.device))
        model.eval()
        attack = cfg.attack.build()
        setup = getattr(attack, "setup", None)
        if callable(setup):
            setup(state, ctx)
        x_all, y_all = state.data.tensors("test", cfg.n_test)
        clean = robust = 0
        for start in range(0, len(x_all), cfg.batch_size):
            xb = x_all[start:start + cfg.batch_size].to(state.device)
            yb = y_all[start:start + cfg.batch_size].to(state.device)
            x_adv = attack.perturb(model, xb, yb)
            with torch.no_grad():
                clean += int((model(xb).argmax(1) == yb).sum())
                robust += int((model(x_adv).argmax(1) == yb).sum())
        n = len(x_all)
        return {"acc": clean / n, "robust_acc": robust / n, "support": float(fit["support"]),
                "n_examples": float(n)}
