"""TRADES (Zhang et al., 2019): loss = CE(f(x), y) + beta * KL(f(x) || f(x')) / B.

The inner maximization follows the TRADES and robust_neural_collapse references:
start at x + 0.001 N(0, I) and take the first gradient there, unclamped (as both
references do; ``clamp_start = True`` projects the start onto [0, 1] first, this
plugin's former behaviour, which on Fashion-MNIST's many zero pixels makes the
ascent markedly stronger), then ascend the summed KL with sign steps (linf) or
normalized steps (l2), projecting onto the eps-ball and [0, 1] after each step
(the standard plugin's ``ascend`` loop, which its ``pgd`` uses too). The default
step is 2 * eps / steps, the L2 reference's rule, so it scales with eps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def kl_to_clean(adv_logits: torch.Tensor, clean_probs: torch.Tensor) -> torch.Tensor:
    """Summed KL(p_clean || p_adv) over the batch (``nn.KLDivLoss(reduction='sum')``)."""
    return F.kl_div(F.log_softmax(adv_logits, dim=1), clean_probs, reduction="sum")


def trades_perturb(model: nn.Module, x: torch.Tensor, *, eps: float, steps: int, step_size: float | None = None,
                   norm: str = "linf", init_std: float = 0.001, clamp_start: bool = False,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """x' in the eps-ball around x (and in [0, 1]) maximizing KL(f(x) || f(x')); uses the model's current mode.

    ``step_size`` defaults to 2 * eps / steps.
    """
    from deepscope_standard import ascend

    x = x.detach()
    with torch.no_grad():
        clean_probs = F.softmax(model(x), dim=1)

    def kl_gradient(x_adv: torch.Tensor) -> torch.Tensor:
        x_adv = x_adv.detach().requires_grad_(True)
        return torch.autograd.grad(kl_to_clean(model(x_adv), clean_probs), x_adv)[0]

    noise = torch.randn(x.shape, generator=generator, device=generator.device if generator else x.device)
    if step_size is None:
        step_size = 2.0 * eps / max(steps, 1)
    return ascend(x, x + init_std * noise.to(x.device), kl_gradient, eps=eps, step_size=step_size, steps=steps,
                  norm=norm, project_start=clamp_start)


def trades_loss(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, beta: float,
                label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, clean logits, adversarial logits): CE on clean data plus beta * batch-mean KL(f(x) || f(x'))."""
    logits = model(x)
    adv_logits = model(x_adv)
    robust = kl_to_clean(adv_logits, F.softmax(logits, dim=1)) / len(x)
    return F.cross_entropy(logits, y, label_smoothing=label_smoothing) + beta * robust, logits, adv_logits
