"""Confidence-side measures at a parameter point (why curvature is what it is).

The paper ties positive curvature to softmax confidence: mean prediction
entropy, the mismatch between the mean prediction and the label prior (the CE
gradient vanishes when they match), dead ReLU outputs (exactly-zero logits), and
how aligned per-example logit gradients are (Fort & Ganguli style).
"""

from __future__ import annotations

import torch
from torch.func import grad, vmap

from .gauss_newton import gamma
from .hessian import FlatModel


@torch.no_grad()
def output_measures(logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Loss, accuracy, entropy, prior mismatch ||Q - p_bar||, zero-logit fraction and Gamma(P)."""
    num_classes = logits.shape[1]
    log_p = logits.log_softmax(1)
    probs = log_p.exp()
    prior = torch.bincount(y, minlength=num_classes).to(probs) / y.numel()
    return {
        "loss": torch.nn.functional.nll_loss(log_p, y).item(),
        "accuracy": (logits.argmax(1) == y).double().mean().item(),
        "entropy": -(probs * log_p).nan_to_num().sum(1).mean().item() + 0.0,  # + 0.0: no "-0"
        "prior_mismatch": (prior - probs.mean(0)).norm().item(),
        "zero_logit_fraction": (logits == 0).double().mean().item(),
        "gamma": gamma(probs.double()),
    }


def logit_gradient_alignment(flat: FlatModel, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                             chunk_size: int | None = None) -> dict[str, float]:
    """Mean cosine between per-example gradients of the same logit k (reference WCA/CCA).

    within: pairs of distinct examples both labelled k; cross: all pairs of
    distinct examples (the reference's ``CCA``). Averaged over k; classes with
    fewer than two examples are left out of ``within``.
    """
    theta = flat.theta

    def logit_k(t, xi, k):
        return flat.logits(t, xi.unsqueeze(0))[0, k]

    within, cross = [], []
    n = x.shape[0]
    off_diag = ~torch.eye(n, dtype=torch.bool, device=x.device)
    for k in range(num_classes):
        jac = vmap(grad(logit_k), in_dims=(None, 0, None), chunk_size=chunk_size)(theta, x, k)
        unit = jac / jac.norm(dim=1, keepdim=True).clamp_min(torch.finfo(jac.dtype).tiny)
        cos = unit @ unit.T
        cross.append(cos[off_diag].mean().item())
        idx = (y == k).nonzero().flatten()
        if idx.numel() > 1:
            sub = cos[idx][:, idx]
            within.append(sub[~torch.eye(idx.numel(), dtype=torch.bool, device=x.device)].mean().item())
    nan = float("nan")
    return {"within_class_alignment": sum(within) / len(within) if within else nan,
            "cross_class_alignment": sum(cross) / len(cross) if cross else nan}
