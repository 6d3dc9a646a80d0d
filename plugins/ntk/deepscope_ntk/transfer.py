"""Attack ``ntk-transfer``: adversarial examples of a kernel predictor, tried on the run's finite network.

Tsilivis & Kempe (arXiv:2210.05577) craft FGSM/PGD against the NTK's kernel regression, which needs no
trained network at all, and show that the examples transfer to networks trained on the same data. In
``setup`` a kernel-regression surrogate is fitted on class-balanced training images; ``perturb`` runs the
nested attack against it; the attack stage then measures the run's model on the result. The surrogate's
own clean and robust accuracy on the attacked examples are logged beside (``surrogate_*``).
"""

from __future__ import annotations

import torch

from deepscope import ConfigError

from .krr import KernelRegression, balanced_indices


class NTKTransfer:
    def __init__(self, config):
        self.config = config
        self.surrogate = self.inner = self.ctx = None
        self.hits = [0, 0, 0]  # surrogate correct on clean, on adversarial, examples seen

    def setup(self, state, ctx) -> None:
        cfg = self.config
        surrogate = state.build_model(cfg.surrogate, seed=state.seed)
        if not isinstance(surrogate.body, KernelRegression):
            raise ConfigError(f"surrogate must be a kernel-regression model, not {type(surrogate.body).__name__}: "
                              "write surrogate = { use = \"kernel-regression\", kernel = \"analytic-ntk\" }",
                              key="surrogate")
        if surrogate.body.config.of_run_model:  # the after-training kernel of the network it is evaluated on
            surrogate.body.adopt_network(state.model.body)
        x, y = state.data.tensors("train")
        idx = balanced_indices(y, cfg.n, state.info.num_classes, balanced=True)
        with torch.no_grad():
            fit = surrogate.body.fit(surrogate.to_input(x[idx].to(state.device)), y[idx].to(state.device))
        self.surrogate = surrogate.eval()
        self.inner = cfg.attack.build()
        inner_setup = getattr(self.inner, "setup", None)
        if callable(inner_setup):
            inner_setup(state, ctx)
        self.ctx, self.hits = ctx, [0, 0, 0]
        ctx.log_metrics({"surrogate_support": fit["support"], "surrogate_lambda": fit["lambda"]})

    def perturb(self, model, x, y, target=None):
        if self.surrogate is None:
            raise RuntimeError("ntk-transfer.perturb before setup: the attack stage calls setup(state, ctx) first")
        x_adv = self.inner.perturb(self.surrogate, x, y, target=target)
        with torch.no_grad():
            self.hits[0] += int((self.surrogate(x).argmax(1) == y).sum())
            self.hits[1] += int((self.surrogate(x_adv).argmax(1) == y).sum())
        self.hits[2] += len(y)
        self.ctx.log_metrics({"surrogate_clean_acc": self.hits[0] / self.hits[2],
                              "surrogate_robust_acc": self.hits[1] / self.hits[2]})
        return x_adv.detach()
