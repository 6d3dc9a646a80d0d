"""Kernel ridge regression as a deepscope model, and the trainer that fits it.

The predictor is f(x) = K(x, X) alpha with alpha = (K(X, X) + lambda I)^-1 Y and lambda = reg * tr(K) / n
(the KIP notebook's convention), solved in float64 by Cholesky. Its support (X in the body's input
space, Y, alpha) is the module's extra state, so checkpoints carry it. The forward returns logits:
the regression outputs themselves, or [-f/2, f/2] for +-1 binary targets (cross-entropy on those is
softplus(-y f), the notebook's loss), so the stock gradient attacks work on it unchanged.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from deepscope import ConfigError

from .analytic import fc_relu_kernel
from .empirical import empirical_nngp, empirical_ntk


def encode_targets(y: torch.Tensor, num_classes: int, targets: str) -> torch.Tensor:
    """Regression targets (n, width) in float64: hard labels encoded; float labels (soft, learned) as given."""
    if y.is_floating_point():
        return (y[:, None] if y.ndim == 1 else y).to(torch.float64)
    if targets == "pm1":
        return (2.0 * y.to(torch.float64) - 1.0)[:, None]
    onehot = F.one_hot(y, num_classes).to(torch.float64)
    return onehot - 1.0 / num_classes if targets == "centered" else onehot


class KernelRegression(nn.Module):
    """K(x, X)(K + lambda I)^-1 Y on inputs in the body's space (normalized by the Network wrapper)."""

    def __init__(self, config, num_classes: int, network: nn.Module | None = None):
        super().__init__()
        self.config, self.num_classes = config, num_classes
        self.network = network
        if network is not None:
            network.requires_grad_(False)  # a fixed feature map: no trainer should move it
        self.support_x = self.targets = self.alpha = None
        self.lam = 0.0

    @property
    def out_width(self) -> int:
        return 1 if self.config.targets == "pm1" else self.num_classes

    def adopt_network(self, body: nn.Module) -> None:
        """Use a frozen copy of ``body`` (the run's trained model, in the same input space) as the kernel's
        network: the after-training kernel. Later training of ``body`` does not move the copy."""
        if self.config.kernel not in ("empirical-ntk", "empirical-nngp"):
            raise ValueError(f"kernel {self.config.kernel!r} has no network to adopt")
        network = copy.deepcopy(body)
        network.requires_grad_(False)
        self.network = network

    def kernel(self, a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        """The scalar kernel K(a, b) in float64, differentiable in the inputs."""
        cfg = self.config
        if cfg.kernel in ("empirical-ntk", "empirical-nngp"):
            if self.network is None:
                raise ConfigError("kernel-regression with of_run_model = true has no network until it adopts the "
                                  "run's model: nest it in kernel-fit's `krr` or ntk-transfer's `surrogate` after "
                                  "a training stage, or set of_run_model = false", key="$.model.of_run_model")
            was_training = self.network.training
            self.network.eval()
            try:
                if cfg.kernel == "empirical-ntk":
                    k = empirical_ntk(self.network, a, b, method=cfg.method, mode="trace",
                                      chunk_size=cfg.chunk_size, dtype=torch.float64)
                else:
                    k = empirical_nngp(self.network, a, b, mode="trace", chunk_size=cfg.chunk_size,
                                       dtype=torch.float64)
            finally:
                self.network.train(was_training)
            return k / self.num_classes if k.ndim == 2 else k
        get = "ntk" if cfg.kernel == "analytic-ntk" else "nngp"
        return fc_relu_kernel(a, b, depth=cfg.depth, w_std=cfg.w_std, b_std=cfg.b_std, get=get)

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        """Solve for alpha on support x (input space) with labels y (hard or float); returns fit metrics."""
        targets = encode_targets(y, self.num_classes, self.config.targets)
        if targets.shape[1] != self.out_width:
            raise ValueError(f"labels of width {targets.shape[1]} do not fit kernel-regression's {self.out_width} "
                             f"outputs (targets = {self.config.targets!r})")
        x = x.detach()
        with torch.no_grad():
            gram = self.kernel(x)
        n = len(x)
        lam = self.config.reg * torch.trace(gram).item() / n
        system = gram + lam * torch.eye(n, dtype=gram.dtype, device=gram.device)
        factor, info = torch.linalg.cholesky_ex(system)
        if info.item() != 0:
            raise ConfigError(
                f"kernel-regression: K(X, X) + lambda I ({n} x {n}, reg = {self.config.reg}) is not positive "
                f"definite (Cholesky fails at column {info.item()}): the support has duplicate or linearly "
                "dependent points for this kernel. Set reg > 0 (e.g. reg = 1e-6) or use fewer support points.",
                key="$.model.reg")
        alpha = torch.cholesky_solve(targets.to(gram.device), factor)
        if not torch.isfinite(alpha).all():
            raise ConfigError("kernel-regression: the solve gave non-finite coefficients (K is numerically "
                              "singular); set reg > 0, e.g. reg = 1e-6", key="$.model.reg")
        self.support_x, self.targets, self.alpha, self.lam = x, targets, alpha, lam
        residual = gram @ alpha - targets.to(gram.device)
        return {"support": n, "lambda": lam, "train_mse": residual.pow(2).mean().item()}

    @property
    def fitted(self) -> bool:
        return self.alpha is not None

    def regress(self, x: torch.Tensor) -> torch.Tensor:
        """f(x): the (n, width) regression outputs in float64."""
        if not self.fitted:
            raise RuntimeError("kernel-regression has no support set yet: fit it first with a "
                               "do = \"train\", use = \"kernel-fit\" stage")
        support = self.support_x.to(x.device)
        return self.kernel(x, support) @ self.alpha.to(x.device)

    def as_logits(self, f: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Regression outputs as logits in ``like``'s dtype: f itself, or [-f/2, f/2] for +-1 targets."""
        logits = torch.cat([-f / 2, f / 2], dim=1) if self.config.targets == "pm1" else f
        return logits.to(like.dtype if like.is_floating_point() else torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.as_logits(self.regress(x), x)

    def get_extra_state(self) -> dict:
        if not self.fitted:
            return {}
        return {"x": self.support_x.cpu(), "targets": self.targets.cpu(), "alpha": self.alpha.cpu(),
                "lambda": self.lam}

    def set_extra_state(self, state: dict) -> None:
        if not state:
            self.support_x = self.targets = self.alpha = None
            self.lam = 0.0
            return
        self.support_x, self.targets, self.alpha = state["x"], state["targets"], state["alpha"]
        self.lam = float(state["lambda"])


def make_kernel_regression(config, info) -> KernelRegression:
    if config.targets == "pm1" and info.num_classes != 2:
        raise ConfigError(f"targets = 'pm1' needs a binary task, but the data has {info.num_classes} classes: "
                          "use 'onehot' or 'centered', or keep two classes (e.g. [data] classes = [0, 9])",
                          key="$.model.targets")
    empirical = config.kernel in ("empirical-ntk", "empirical-nngp") and not config.of_run_model
    network = config.network.build(info) if empirical else None
    return KernelRegression(config, info.num_classes, network)


def balanced_indices(y: torch.Tensor, n: int | None, num_classes: int, balanced: bool) -> torch.Tensor:
    """The first n // classes examples of every class (or the first n when not balanced / float labels)."""
    if n is None or n >= len(y):
        return torch.arange(len(y))
    if not balanced or y.is_floating_point():
        return torch.arange(n)
    per = max(n // num_classes, 1)
    picks = [torch.nonzero(y == c).flatten()[:per] for c in range(num_classes)]
    return torch.cat(picks).sort().values


class KernelFit:
    """Fits ``state.model.body`` (a kernel-regression) on the stage's training split."""

    def __init__(self, config):
        self.config = config

    def train(self, state, ctx) -> None:
        cfg = self.config
        model = state.model if cfg.krr is None else state.build_model(cfg.krr, seed=state.seed)
        body = model.body
        if not isinstance(body, KernelRegression):
            where = "krr" if cfg.krr is not None else "use"
            raise ConfigError(f"kernel-fit fits a kernel-regression model, not {type(body).__name__}: "
                              "write [model] use = \"kernel-regression\", or krr = { use = \"kernel-regression\", "
                              "... } to fit one beside the run's model", key=where)
        if body.config.of_run_model:
            if cfg.krr is None:
                raise ConfigError("kernel-fit: the run's model is itself the kernel-regression with of_run_model = "
                                  "true, so there is no trained model to take the kernel of: put it in kernel-fit's "
                                  "krr = { ... } after a training stage of a network", key="krr")
            body.adopt_network(state.model.body)
        x, y = state.data.tensors("train")
        idx = balanced_indices(y, cfg.n, state.info.num_classes, cfg.balanced)
        x, y = x[idx].to(state.device), y[idx].to(state.device)
        with torch.no_grad():
            metrics = body.fit(model.to_input(x), y)
            metrics["train_acc"] = self._accuracy(model, x, y)
            test_x, test_y = state.data.tensors("test", cfg.test_n)
            metrics["test_acc"] = self._accuracy(model, test_x.to(state.device), test_y.to(state.device))
        state.step += 1
        ctx.log_metrics(metrics)

    def _accuracy(self, model, x, y) -> float:
        if y.is_floating_point():
            y = y.argmax(1) if y.ndim == 2 else (y > 0).long()
        was_training = model.training
        model.eval()
        try:
            preds = torch.cat([model(x[i:i + self.config.batch_size]).argmax(1)
                               for i in range(0, len(x), self.config.batch_size)])
        finally:
            model.train(was_training)
        return (preds == y).double().mean().item()
