"""TRADES (Zhang et al., 2019): loss = CE(f(x), y) + beta * KL(f(x) || f(x')) / B.

The inner maximization follows the robust_neural_collapse reference: start at
x + 0.001 N(0, I), ascend the summed KL with sign steps (linf) or normalized
steps (l2), project onto the eps-ball and [0, 1] after each step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def kl_to_clean(adv_logits: torch.Tensor, clean_probs: torch.Tensor) -> torch.Tensor:
    """Summed KL(p_clean || p_adv) over the batch (``nn.KLDivLoss(reduction='sum')``)."""
    return F.kl_div(F.log_softmax(adv_logits, dim=1), clean_probs, reduction="sum")


def _project(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        shape = (-1,) + (1,) * (x.dim() - 1)
        norms = delta.flatten(1).norm(dim=1).view(shape)
        delta = delta * (eps / norms.clamp_min(1e-12)).clamp_max(1.0)
    return (x + delta).clamp(0.0, 1.0)


def trades_perturb(model: nn.Module, x: torch.Tensor, *, eps: float, step_size: float, steps: int,
                   norm: str = "linf", init_std: float = 0.001,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """x' in the eps-ball around x (and in [0, 1]) maximizing KL(f(x) || f(x')); uses the model's current mode."""
    x = x.detach()
    with torch.no_grad():
        clean_probs = F.softmax(model(x), dim=1)
    noise = torch.randn(x.shape, generator=generator, device=generator.device if generator else x.device)
    x_adv = _project(x, x + init_std * noise.to(x.device), eps, norm)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(kl_to_clean(model(x_adv), clean_probs), x_adv)
        if norm == "linf":
            step = grad.sign()
        else:
            shape = (-1,) + (1,) * (x.dim() - 1)
            step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
        x_adv = _project(x, x_adv.detach() + step_size * step, eps, norm)
    return x_adv.detach()


def trades_loss(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, beta: float,
                label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, clean logits, adversarial logits): CE on clean data plus beta * batch-mean KL(f(x) || f(x'))."""
    logits = model(x)
    adv_logits = model(x_adv)
    robust = kl_to_clean(adv_logits, F.softmax(logits, dim=1)) / len(x)
    return F.cross_entropy(logits, y, label_smoothing=label_smoothing) + beta * robust, logits, adv_logits
