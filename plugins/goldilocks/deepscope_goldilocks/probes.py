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
        basis = random_subspace(flat.dim, c.subspace_dim, gen, dtype=dtype).to(state.device)
        sub = hessian.subspace(basis)
        s = spectrum_summary(sub)
        out = {"positive_curvature": s["positive_curvature"], "frac_positive": s["frac_positive"],
               "subspace_trace": s["trace"], "subspace_frobenius": s["frobenius"], "loss": hessian.loss()}
        ctx.log_tensors(f"subspace_hessian_epoch{state.epoch}",
                        {"hessian": sub, "eigenvalues": torch.linalg.eigvalsh(sub)})
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
        basis = random_subspace(flat.dim, c.subspace_dim, gen, dtype=DTYPES[c.dtype]).to(state.device)
        parts = split_hessian(flat, split_batches((x, y), c.batch_size), basis, c.hvp, c.chunk_size)
        ctx.log_tensors(f"gauss_newton_epoch{state.epoch}", parts)
        out = {}
        for key, matrix in parts.items():
            s = spectrum_summary(matrix)
            out[f"{key}_positive_curvature"] = s["positive_curvature"]
            out[f"{key}_frac_positive"] = s["frac_positive"]
            out[f"{key}_spectral_norm"] = s["spectral_norm"]
            out[f"{key}_max_eigenvalue"] = s["max_eigenvalue"]
        residual = parts["hessian"] - parts["g"] - parts["h_term"]
        scale = torch.linalg.matrix_norm(parts["hessian"]).item()
        out["split_residual"] = torch.linalg.matrix_norm(residual).item() / scale if scale else 0.0
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
