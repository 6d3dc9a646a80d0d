"""The lazy regime: linearized networks, full-batch MSE gradient descent, and its closed-form prediction.

Under gradient descent on L = 1/(2n) sum_i ||f(x_i) - y_i||^2 with step eta, a *linearized* network
f_lin(x; theta) = f(x; theta0) + J(x; theta0)(theta - theta0) moves its training outputs exactly as
f_{t+1} = f_t - (eta / n) Theta (f_t - Y), with Theta the (n k x n k) NTK at theta0, so
f_t = f_0 + (I - (I - eta Theta / n)^t)(Y - f_0); gradient flow gives (I - exp(-eta Theta t / n)), the lecture
notes' formula. A wide network in the NTK parameterization follows it closely; ``ntk-dynamics`` measures how
closely. ``linearized`` is the official code's ``lin_epoch`` network as a model.
"""

from __future__ import annotations

import torch
from torch import nn

from deepscope import ConfigError

from .empirical import empirical_ntk
from .krr import balanced_indices, encode_targets


def _get(module: nn.Module, dotted: str) -> torch.Tensor:
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


class Linearized(nn.Module):
    """f(x; theta0) + J(x; theta0)(theta - theta0): trains theta; theta0 is kept as buffers."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        self.names = [name for name, _ in network.named_parameters()]
        self.anchor = nn.Module()
        for name, p in network.named_parameters():
            self.anchor.register_buffer(name.replace(".", "__"), p.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call, jvp

        theta = {name: _get(self.network, name) for name in self.names}  # attribute access: functional_call-safe
        theta0 = {name: getattr(self.anchor, name.replace(".", "__")) for name in self.names}
        buffers = {name: b for name, b in self.network.named_buffers()}
        tangent = {name: theta[name] - theta0[name].to(theta[name].dtype) for name in self.names}
        theta0 = {name: theta0[name].to(theta[name].dtype) for name in self.names}
        out, change = jvp(lambda p: functional_call(self.network, (p, buffers), (x,)), (theta0,), (tangent,))
        return out + change


def make_linearized(config, info) -> Linearized:
    return Linearized(config.network.build(info))


def training_batch(state, n, targets):
    """The full batch of gd-mse: the first n // classes training images of each class, and their targets."""
    x, y = state.data.tensors("train")
    if y.is_floating_point():
        raise ConfigError("gd-mse trains on hard labels; this stage's data has float labels", key="data")
    if targets == "pm1" and state.info.num_classes != 2:
        raise ConfigError(f"targets = 'pm1' needs a binary task, not {state.info.num_classes} classes",
                          key="targets")
    idx = balanced_indices(y, n, state.info.num_classes, balanced=True)
    return x[idx].to(state.device), encode_targets(y[idx], state.info.num_classes, targets).to(state.device)


def mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1/(2n) sum_i ||f(x_i) - y_i||^2."""
    return 0.5 * (outputs - targets.to(outputs.dtype)).pow(2).sum() / len(outputs)


def gd_mse(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, *, lr: float, steps: int) -> list[float]:
    """Full-batch gradient descent on :func:`mse`, in place; returns the loss before each step."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = mse(model(x), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


class GDMSE:
    """The ``gd-mse`` trainer: every step is an epoch (so periodic probes see it) and is checkpointed."""

    def __init__(self, config):
        self.config = config

    def train(self, state, ctx) -> None:
        cfg, model = self.config, state.model
        x, targets = training_batch(state, cfg.n, cfg.targets)
        if state.model(x[:1]).shape[1] != targets.shape[1]:
            raise ConfigError(f"the model has {state.model(x[:1]).shape[1]} outputs but targets = "
                              f"{cfg.targets!r} gives {targets.shape[1]}", key="targets")
        state.extras["ntk/gd-mse"] = {  # what ntk-dynamics needs; restored by ctx.resume on a resumed run
            "lr": cfg.lr, "n": len(x), "n_param": cfg.n if cfg.n is not None else -1, "targets": cfg.targets,
            "start_step": state.step,
            "theta0": {name: p.detach().cpu().clone() for name, p in model.named_parameters()}}
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
        model.train()
        for _ in range(ctx.resume(optimizer=opt), cfg.steps):
            loss = mse(model(x), targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
            state.apply_masks()
            state.step += 1
            ctx.epoch_end({"loss": loss.item()}, checkpoint={"optimizer": opt})


def flat_kernel(kernel: torch.Tensor) -> torch.Tensor:
    """(n, n, k, k) -> (n k, n k), ordered as outputs.flatten() of an (n, k) output."""
    n, _, k, _ = kernel.shape
    return kernel.permute(0, 2, 1, 3).reshape(n * k, n * k)


def predicted_outputs(theta: torch.Tensor, f0: torch.Tensor, targets: torch.Tensor, rate: float, t: int,
                      discrete: bool = True) -> torch.Tensor:
    """f_t = f_0 + (I - M_t)(Y - f_0), M_t = (I - rate Theta)^t (discrete GD) or exp(-rate Theta t) (flow)."""
    values, vectors = torch.linalg.eigh((theta + theta.T) / 2)
    decay = (1 - rate * values).pow(t) if discrete else torch.exp(-rate * values * t)
    residual = (targets - f0).flatten()
    moved = residual - vectors @ (decay * (vectors.T @ residual))
    return f0 + moved.view_as(f0)


class NTKDynamics:
    """The ``ntk-dynamics`` probe: Theta_0 and f_0 from gd-mse's starting weights (computed once, kept in
    ``state.extras``, so they survive resume), then the outputs now against the prediction at t steps."""

    KEY = "ntk/dynamics"

    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx) -> dict:
        run = state.extras.get("ntk/gd-mse")
        if run is None:
            raise ConfigError("ntk-dynamics follows a gd-mse training: put it in that stage's probes (e.g. probes = "
                              "[{ use = \"ntk-dynamics\", every = 10 }])", key="use")
        x, targets = training_batch(state, None if run["n_param"] < 0 else run["n_param"], run["targets"])
        with ctx.eval_mode(), torch.no_grad():
            outputs = state.model(x).double()
        saved = state.extras.get(self.KEY)
        if saved is None or saved["start_step"] != run["start_step"]:
            saved = self._reference(state, run, x)
            state.extras[self.KEY] = saved
        t = state.step - int(run["start_step"])
        theta, f0 = saved["theta"].to(outputs.device), saved["f0"].to(outputs.device)
        targets = targets.double()
        rate = run["lr"] / run["n"]
        discrete = predicted_outputs(theta, f0, targets, rate, t, discrete=True)
        flow = predicted_outputs(theta, f0, targets, rate, t, discrete=False)
        scale = (targets - f0).norm().clamp_min(1e-30)
        return {"t": t, "deviation": ((outputs - discrete).norm() / scale).item(),
                "deviation_flow": ((outputs - flow).norm() / scale).item(),
                "residual": ((outputs - targets).norm() / scale).item(),
                "predicted_residual": ((discrete - targets).norm() / scale).item()}

    def _reference(self, state, run, x) -> dict:
        import copy

        start = copy.deepcopy(state.model)
        with torch.no_grad():
            for name, p in start.named_parameters():
                p.copy_(run["theta0"][name].to(p.device))
        start.eval()
        dtype = torch.float64 if self.config.float64 else None
        with torch.enable_grad():
            theta = flat_kernel(empirical_ntk(start, x, method=self.config.method, mode="full",
                                              chunk_size=self.config.chunk_size, dtype=dtype))
        with torch.no_grad():
            f0 = start(x).double()
        return {"theta": theta.double().cpu(), "f0": f0.cpu(), "start_step": run["start_step"]}
