"""Probes ``ntk-evolution`` and ``ntk-evolution-report``: how the empirical NTK moves during training.

Tsilivis & Kempe (arXiv:2210.05577) follow the kernel of a network under standard and adversarial training
on a fixed batch: its similarity s(K, K') = <K, K'>_F / (||K||_F ||K'||_F) to the initial and previous
kernel, the distance 1 - s, the radius ||K_t - K_0||_F and angle arccos s(K_t, K_0) (a polar picture of the
trajectory), and how much of the spectrum sits in the top eigenvalues. The initial and previous kernels and
the history live in ``state.extras``, so they are checkpointed and survive a resume.
"""

from __future__ import annotations

import math

import torch

from deepscope import ConfigError

from .dynamics import flat_kernel
from .empirical import empirical_ntk
from .krr import balanced_indices

KEY = "ntk/evolution"


def similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    """<A, B>_F / (||A||_F ||B||_F): 1 for B = c A (c > 0); in [0, 1] for PSD kernels."""
    return ((a * b).sum() / (a.norm() * b.norm())).item()


def distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """1 - s(A, B), clipped at 0 (rounding makes s(K, K) exceed 1 by an ulp)."""
    return max(0.0, 1.0 - similarity(a, b))


def spectral_mass(kernel: torch.Tensor, k: int) -> float:
    """The share of sum lambda_i^2 = ||K||_F^2 carried by the k largest eigenvalues."""
    eigs = torch.linalg.eigvalsh((kernel + kernel.T) / 2).flip(0)
    squares = eigs.pow(2)
    return (squares[:k].sum() / squares.sum()).item()


def kernel_metrics(kernel, initial, previous, mass_k) -> dict:
    sim = min(max(similarity(kernel, initial), -1.0), 1.0)
    metrics = {"sim_init": sim, "dist_init": max(0.0, 1.0 - sim), "angle": math.acos(sim),
               "radius": (kernel - initial).norm().item(),
               "rel_radius": ((kernel - initial).norm() / initial.norm()).item(),
               "dist_prev": distance(kernel, previous)}
    for k in mass_k:
        metrics[f"mass_top{k}"] = spectral_mass(kernel, k)
    return metrics


class NTKEvolution:
    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx) -> dict:
        cfg = self.config
        x, y = state.data.tensors("train")
        if y.is_floating_point():
            raise ConfigError("ntk-evolution needs a training split with hard labels (its fixed batch is class-"
                              "balanced)", key="use")
        idx = balanced_indices(y, cfg.n, state.info.num_classes, balanced=True)
        x, y = x[idx].to(state.device), y[idx].to(state.device)
        batches = {"": x}
        if cfg.attack is not None:
            attack = cfg.attack.build()
            with ctx.eval_mode():
                batches["adv_"] = attack.perturb(state.model, x, y).detach()
        saved = state.extras.setdefault(f"{KEY}/{ctx.prefix}", {"epochs": []})
        metrics = {}
        for tag, batch in batches.items():
            kernel = self._kernel(state, ctx, batch)
            initial = saved.get(f"{tag}initial")
            if initial is None:
                initial = saved[f"{tag}initial"] = kernel.clone()
            previous = saved.get(f"{tag}previous", initial)
            metrics.update({tag + k: v for k, v in kernel_metrics(kernel, initial, previous, cfg.mass_k).items()})
            saved[f"{tag}previous"] = kernel
            if cfg.history:
                saved.setdefault(f"{tag}history", []).append(kernel.float())
        saved["epochs"].append(state.epoch)
        metrics["epoch"] = state.epoch
        return metrics

    def _kernel(self, state, ctx, x) -> torch.Tensor:
        cfg = self.config
        dtype = torch.float64 if cfg.float64 else None
        with ctx.eval_mode(), torch.enable_grad():
            kernel = empirical_ntk(state.model, x, method=cfg.method, mode=cfg.mode, chunk_size=cfg.chunk_size,
                                   dtype=dtype).detach().double().cpu()
        return flat_kernel(kernel) if cfg.mode == "full" else kernel


class NTKEvolutionReport:
    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx) -> dict:
        saved = state.extras.get(f"{KEY}/{self.config.probe}")
        if not saved or len(saved.get("history", [])) < 2:
            raise ConfigError(f"no ntk-evolution history under {self.config.probe!r} with two kernels or more: run "
                              "an ntk-evolution probe (history = true) periodically in an earlier train stage, and "
                              "set probe = \"probe/<its name>\"", key="probe")
        history = [k.double() for k in saved["history"]]
        epochs = list(saved["epochs"])
        n = len(history)
        dist = torch.tensor([[distance(a, b) for b in history] for a in history])
        radius = torch.tensor([(k - history[0]).norm().item() for k in history])
        angle = torch.tensor([math.acos(min(max(similarity(k, history[0]), -1.0), 1.0)) for k in history])
        final = radius[-1].item() if radius[-1] > 0 else 1.0
        ctx.log_table("ntk_evolution", [{"epoch": e, "radius": r.item(), "radius_over_final": r.item() / final,
                                         "angle": a.item()} for e, r, a in zip(epochs, radius, angle)])
        if state.tracker is not None:
            self._plots(ctx, dist, radius / final, angle, epochs)
        half = next((e for e, r in zip(epochs, radius / final) if r >= 0.5), epochs[-1])
        return {"kernels": n, "final_dist_init": dist[0, -1].item(), "final_angle": angle[-1].item(),
                "max_dist": dist.max().item(), "epoch_half_radius": half}

    def _plots(self, ctx, dist, radius, angle, epochs) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 3.4))
        image = ax.imshow(dist.numpy(), cmap="viridis", origin="lower")
        ax.set_xlabel("measurement")
        ax.set_ylabel("measurement")
        ax.set_title("1 - s(K_i, K_j)")
        fig.colorbar(image, ax=ax)
        ctx.log_figure(fig, "ntk_evolution_distance.png")
        fig = plt.figure(figsize=(4, 4))
        ax = fig.add_subplot(projection="polar")
        ax.plot(angle.numpy(), radius.numpy(), "o-", markersize=3)
        ax.set_title("kernel trajectory: angle to K_0, radius / final radius")
        ctx.log_figure(fig, "ntk_evolution_polar.png")
