"""The probes ``curvature``, ``gauss-newton`` and ``confidence``."""

from __future__ import annotations

import torch

from .confidence import logit_gradient_alignment, output_measures
from .gauss_newton import split_hessian
from .hessian import FlatModel, LossHessian, hutchinson, lanczos_top, random_subspace, split_batches, spectrum_summary
from .measure import DTYPES, probe_examples, probe_model


class CurvatureProbe:
    """Positive curvature Tr(H)/||H||_F and frac_positive of the loss Hessian in a random subspace,
    plus full-space Hutchinson Tr(H), ||H||_F and the Lanczos sharpness."""

    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx) -> dict[str, float]:
        c = self.config
        dtype = DTYPES[c.dtype]
        flat = FlatModel(probe_model(state, c.dtype))
        x, y = probe_examples(state, c.split, c.n_examples, c.dtype)
        hessian = LossHessian(flat, split_batches((x, y), c.batch_size), mode=c.hvp, chunk_size=c.chunk_size)
        gen = torch.Generator().manual_seed(c.subspace_seed)
        bases = [random_subspace(flat.dim, c.subspace_dim, gen, dtype=dtype) for _ in range(c.n_subspaces)]
        subs = subspace_hessians(hessian, bases, state.device)
        summaries = [spectrum_summary(sub) for sub in subs]
        out = mean_and_stderr(summaries, {"positive_curvature": "positive_curvature",
                                          "frac_positive": "frac_positive", "subspace_trace": "trace",
                                          "subspace_frobenius": "frobenius"})
        out["loss"] = hessian.loss()
        stacked = torch.stack(subs)
        ctx.log_tensors(f"subspace_hessian_epoch{state.epoch}",
                        {"hessian": subs[0] if len(subs) == 1 else stacked,
                         "eigenvalues": torch.linalg.eigvalsh(subs[0] if len(subs) == 1 else stacked)})
        probe_gen = torch.Generator().manual_seed(c.probe_seed)
        if c.probes:
            h = hutchinson(hessian.matmul, flat.dim, c.probes, probe_gen, dtype)
            out.update({"trace_hutchinson": h["trace"], "trace_hutchinson_stderr": h["trace_stderr"],
                        "frobenius_hutchinson": h["frobenius"],
                        "frobenius_hutchinson_stderr": h["frobenius_stderr"],
                        "positive_curvature_hutchinson": h["trace"] / h["frobenius"] if h["frobenius"] else None})
        if c.lanczos_steps:
            out["sharpness"] = lanczos_top(hessian.matmul, flat.dim, c.lanczos_steps, probe_gen, dtype)
        if c.per_layer:
            for name, block in flat.blocks().items():
                d = min(c.subspace_dim, block.stop - block.start)
                layer_basis = random_subspace(flat.dim, d, gen, support=block, dtype=dtype).to(state.device)
                ls = spectrum_summary(hessian.subspace(layer_basis))
                out[f"layer/{name}/positive_curvature"] = ls["positive_curvature"]
                out[f"layer/{name}/frac_positive"] = ls["frac_positive"]
        return out


class GaussNewtonProbe:
    """H = G + H-term in a random subspace: Tr/||.||_F, frac_positive and spectral norm of each."""

    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx) -> dict[str, float]:
        c = self.config
        flat = FlatModel(probe_model(state, c.dtype))
        x, y = probe_examples(state, c.split, c.n_examples, c.dtype)
        gen = torch.Generator().manual_seed(c.subspace_seed)
        batches = split_batches((x, y), c.batch_size)
        splits = []
        for _ in range(c.n_subspaces):
            basis = random_subspace(flat.dim, c.subspace_dim, gen, dtype=DTYPES[c.dtype]).to(state.device)
            splits.append(split_hessian(flat, batches, basis, c.hvp, c.chunk_size))
        ctx.log_tensors(f"gauss_newton_epoch{state.epoch}", splits[0] if len(splits) == 1 else
                        {k: torch.stack([p[k] for p in splits]) for k in splits[0]})
        out = {}
        for key in splits[0]:
            summaries = [spectrum_summary(p[key]) for p in splits]
            out.update(mean_and_stderr(summaries, {f"{key}_{m}": m for m in (
                "positive_curvature", "frac_positive", "spectral_norm", "max_eigenvalue")}))
        residuals = []
        for parts in splits:
            residual = parts["hessian"] - parts["g"] - parts["h_term"]
            scale = torch.linalg.matrix_norm(parts["hessian"]).item()
            residuals.append(torch.linalg.matrix_norm(residual).item() / scale if scale else 0.0)
        out["split_residual"] = max(residuals)
        return out


class SpectralDensityProbe:
    """The full Hessian's eigenvalue density by stochastic Lanczos quadrature: mass above zero, edges,
    trace, and the smoothed density as numbers and a plot."""

    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx) -> dict[str, float]:
        from .spectral import density_grid, density_on_grid, slq, slq_summary

        c = self.config
        dtype = DTYPES[c.dtype]
        flat = FlatModel(probe_model(state, c.dtype))
        x, y = probe_examples(state, c.split, c.n_examples, c.dtype)
        hessian = LossHessian(flat, split_batches((x, y), c.batch_size), mode=c.hvp)
        quadratures = slq(hessian.matmul, flat.dim, c.lanczos_steps, c.n_vectors,
                          torch.Generator().manual_seed(c.seed), dtype)
        out = slq_summary(quadratures, flat.dim)
        grid, sigma = density_grid(quadratures, c.grid_points, c.sigma)
        density = density_on_grid(quadratures, grid, sigma)
        ctx.log_tensors(f"spectral_density_epoch{state.epoch}", {  # per start vector: Ritz values, weights
            "nodes": [n for n, _ in quadratures], "weights": [w for _, w in quadratures],
            "grid": grid, "density": density, "sigma": sigma})
        if c.plot:
            ctx.log_figure(density_figure(grid, density, out, state.epoch), f"spectral_density_epoch{state.epoch}")
        return out


def density_figure(grid: torch.Tensor, density: torch.Tensor, summary: dict, epoch: int):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.semilogy(grid.numpy(), density.clamp_min(1e-12).numpy())
    ax.axvline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (SLQ, smoothed)")
    ax.set_title(f"epoch {epoch}: mass above zero {summary['mass_positive']:.3f}")
    fig.tight_layout()
    return fig


def subspace_hessians(hessian: LossHessian, bases: list[torch.Tensor], device) -> list[torch.Tensor]:
    """P H P^T for every basis, from one batched product pass over all their rows."""
    stacked = torch.cat(bases).to(device)
    hp = hessian.matmul(stacked)
    out, start = [], 0
    for basis in bases:
        d = basis.shape[0]
        h = stacked[start:start + d].to(hp) @ hp[start:start + d].T
        out.append((h + h.T) / 2)
        start += d
    return out


def mean_and_stderr(summaries: list[dict[str, float]], names: dict[str, str]) -> dict[str, float]:
    """``metric`` = the mean over subspaces; with two or more, ``metric_stderr`` = sample std / sqrt(n)."""
    out = {}
    n = len(summaries)
    for metric, key in names.items():
        values = torch.tensor([s[key] for s in summaries], dtype=torch.float64)
        out[metric] = values.mean().item()
        if n > 1:
            out[f"{metric}_stderr"] = (values.std() / n ** 0.5).item()
    return out


class ConfidenceProbe:
    """Entropy, prior mismatch, gradient norm, loss, zero logits and logit-gradient alignment."""

    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx) -> dict[str, float]:
        c = self.config
        flat = FlatModel(probe_model(state, c.dtype))
        x, y = probe_examples(state, c.split, c.n_examples, c.dtype)
        with torch.no_grad():
            out = output_measures(flat.logits(flat.theta, x), y)
        out["grad_norm"] = LossHessian(flat, split_batches((x, y), 500)).gradient().norm().item()
        if c.alignment_examples:
            n = min(c.alignment_examples, x.shape[0])
            out.update(logit_gradient_alignment(flat, x[:n], y[:n], state.info.num_classes))
        return out
