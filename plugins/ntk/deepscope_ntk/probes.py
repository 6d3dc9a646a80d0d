"""Probe ``empirical-ntk``: what the run's model's tangent kernel (or NNGP kernel) looks like on a fixed batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deepscope import ConfigError

from .empirical import empirical_nngp, empirical_ntk
from .krr import balanced_indices


def kernel_statistics(kernel: torch.Tensor, targets: torch.Tensor, top_k: int) -> dict:
    """Trace, spectrum and label alignment y^T K y / (||K||_F ||y||^2) of a symmetric PSD kernel matrix.

    ``targets`` has one row per kernel row; with several columns the alignment sums y_c^T K y_c over them
    (and divides by ||Y||_F^2), the multi-output form of the same quantity.
    """
    kernel = (kernel + kernel.T) / 2
    eigs = torch.linalg.eigvalsh(kernel).flip(0)  # descending
    quad = (targets * (kernel @ targets)).sum()
    stats = {"trace": torch.trace(kernel).item(), "frobenius": kernel.norm().item(),
             "max_eig": eigs[0].item(), "min_eig": eigs[-1].item(),
             "alignment": (quad / (kernel.norm() * targets.pow(2).sum())).item()}
    if eigs[-1] > 0:
        stats["cond"] = (eigs[0] / eigs[-1]).item()
    for i, value in enumerate(eigs[:top_k].tolist()):
        stats[f"eig_{i}"] = value
    return stats


class EmpiricalNTKProbe:
    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx) -> dict:
        cfg, classes = self.config, state.info.num_classes
        x, y = state.data.tensors(cfg.split)
        idx = balanced_indices(y, cfg.n, classes, balanced=True)
        x, y = x[idx].to(state.device), y[idx]
        if not any(True for _ in state.model.parameters()):
            raise ConfigError(f"{type(state.model.body).__name__} has no parameters, so it has no empirical "
                              "NTK; probe a network model (e.g. [model] use = \"ntk-mlp\")", key="use")
        dtype = torch.float64 if cfg.float64 else None
        with ctx.eval_mode(), torch.enable_grad():
            if cfg.kind == "nngp":
                kernel = empirical_nngp(state.model, x, mode=cfg.mode, chunk_size=cfg.chunk_size, dtype=dtype)
            else:
                kernel = empirical_ntk(state.model, x, method=cfg.method, mode=cfg.mode, chunk_size=cfg.chunk_size,
                                       dtype=dtype)
            kernel = kernel.detach().cpu().double()
        onehot = (F.one_hot(y, classes).double() - 1.0 / classes) if not y.is_floating_point() else y.double()
        if cfg.mode == "full":
            n, _, k, _ = kernel.shape
            kernel = kernel.permute(0, 2, 1, 3).reshape(n * k, n * k)
            if onehot.shape[1] != k:
                raise ConfigError(f"labels of width {onehot.shape[1]} against {k} model outputs: use mode = "
                                  "\"trace\"", key="mode")
            onehot = onehot.reshape(n * k, 1)
        stats = kernel_statistics(kernel, onehot, cfg.top_k)
        stats["n"] = len(x)
        return stats
