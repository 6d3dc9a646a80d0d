"""Probe ``synthetic-krr``: kernel regression fitted on a distilled set, clean and under nested attacks.

The paper deploys its datasets in kernel regression and in neural networks. This probe gives the kernel
side in the same pipeline as the network's attack stages: a fresh kernel-regression (the nested ``krr``)
is fitted on the set, then scored on real test images, clean and under each nested attack run against the
fitted predictor (white-box, or through a surrogate for transfer attacks), with the per-example worst case
over all of them. As a periodic probe of a distill stage it follows the current iterate.
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
        names = attack_names([spec.name for spec in cfg.attacks])
        attacks = [spec.build() for spec in cfg.attacks]
        for attack in attacks:
            setup = getattr(attack, "setup", None)
            if callable(setup):  # surrogates (transfer, ntk-transfer) are fitted once, before the first batch
                setup(state, ctx)
        x_all, y_all = state.data.tensors("test", cfg.n_test)
        clean = torch.zeros(len(x_all), dtype=torch.bool)
        robust = torch.zeros(len(attacks), len(x_all), dtype=torch.bool)
        for start in range(0, len(x_all), cfg.batch_size):
            xb = x_all[start:start + cfg.batch_size].to(state.device)
            yb = y_all[start:start + cfg.batch_size].to(state.device)
            with torch.no_grad():
                clean[start:start + len(yb)] = (model(xb).argmax(1) == yb).cpu()
            for a, attack in enumerate(attacks):
                x_adv = attack.perturb(model, xb, yb)
                with torch.no_grad():
                    robust[a, start:start + len(yb)] = (model(x_adv).argmax(1) == yb).cpu()
        n = len(x_all)
        worst = clean & robust.all(0)  # robust only if correct clean and under every attack
        metrics = {"acc": clean.double().mean().item(), "robust_acc": worst.double().mean().item(),
                   "support": float(fit["support"]), "n_examples": float(n)}
        for name, hits in zip(names, robust):
            metrics[f"robust_acc_{name}"] = hits.double().mean().item()
        return metrics


def attack_names(uses: list[str]) -> list[str]:
    """Metric suffixes of the attacks: their names, numbered from the second use of the same one."""
    seen: dict[str, int] = {}
    out = []
    for use in uses:
        count = seen.get(use, 0)
        seen[use] = count + 1
        out.append(use if count == 0 else f"{use}_{count}")
    return out
