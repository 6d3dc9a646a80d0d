"""Attacks used to audit noisy front-ends: EOT-PGD (white-box) and Square (gradient-free).

The gradient-check probe needs a white-box and a black-box attack that it runs
with identical budgets and seeds. The registered `pgd` of deepscope-standard is
the one to use in pipelines; this small L-inf/L2 PGD with EOT keeps the probe
self-contained. Square (Andriushchenko et al., 2020) only queries the loss, so
it cannot be fooled by uninformative gradients. Neither changes model.training.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def _ce_grad(model, x: torch.Tensor, y: torch.Tensor, eot: int) -> torch.Tensor:
    """Input gradient of the summed cross-entropy, averaged over ``eot`` noise draws."""
    x = x.detach().requires_grad_(True)
    total = torch.zeros_like(x)
    for _ in range(eot):
        loss = F.cross_entropy(model(x), y, reduction="sum")
        total += torch.autograd.grad(loss, x)[0]
    return total / eot


def _project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    flat = delta.flatten(1)
    scale = (eps / flat.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
    return (flat * scale[:, None]).view_as(delta)


def pgd_eot(model, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 20, step_size: float | None = None,
            norm: str = "linf", eot: int = 1, random_start: bool = True,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Untargeted PGD on cross-entropy; each step's gradient averages ``eot`` noise draws."""
    if eps == 0:
        return x.detach().clone()
    step_size = 2.5 * eps / steps if step_size is None else step_size
    if random_start:
        noise = torch.rand(x.shape, generator=generator).to(x) * 2 - 1
        delta = _project(noise * eps, eps, norm)
    else:
        delta = torch.zeros_like(x)
    x_adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        grad = _ce_grad(model, x_adv, y, eot)
        if norm == "linf":
            step = grad.sign()
        else:
            step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        delta = _project(x_adv + step_size * step - x, eps, norm)
        x_adv = (x + delta).clamp(0, 1).detach()
    return x_adv


def _margin(model, x: torch.Tensor, y: torch.Tensor, eot: int) -> torch.Tensor:
    """Correct logit minus the best other logit, averaged over noise draws (< 0: misclassified)."""
    with torch.no_grad():
        total = torch.zeros(len(x), device=x.device)
        for _ in range(eot):
            logits = model(x)
            correct = logits.gather(1, y[:, None]).squeeze(1)
            others = logits.clone()
            others.scatter_(1, y[:, None], float("-inf"))
            total += correct - others.max(1).values
    return total / eot


def square_fraction(p_init: float, it: int, n_iters: int) -> float:
    """The reference schedule: the square's pixel fraction halves at fixed fractions of the budget."""
    it = int(it / n_iters * 10000)
    for bound, divisor in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64),
                           (6000, 128), (8000, 256)):
        if it <= bound:
            return p_init / divisor
    return p_init / 512


def square_linf(model, x: torch.Tensor, y: torch.Tensor, eps: float, queries: int = 300, p_init: float = 0.1,
                eot: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Square attack, L-inf: random +-eps squares, kept only when they lower the margin."""
    if eps == 0:
        return x.detach().clone()
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    b, c, h, w = x.shape

    def rand(*shape):
        return torch.rand(shape, generator=gen).to(x.device)

    # vertical stripes of +-eps, as in the reference initialization
    stripes = torch.where(rand(b, c, 1, w) < 0.5, -eps, eps)
    x_best = (x + stripes).clamp(0, 1)
    margin = _margin(model, x_best, y, eot)
    n_iters = max(queries - 1, 1)
    for it in range(n_iters):
        active = (margin > 0).nonzero().flatten()
        if len(active) == 0:
            break
        side = max(int(round(math.sqrt(square_fraction(p_init, it, n_iters) * h * w))), 1)
        side = min(side, h - 1, w - 1) if min(h, w) > 1 else 1
        top = int(rand(1).item() * (h - side + 1))
        left = int(rand(1).item() * (w - side + 1))
        xa, xb = x[active], x_best[active]
        delta = xb - xa
        signs = torch.where(rand(len(active), c, 1, 1) < 0.5, -eps, eps)
        delta[:, :, top:top + side, left:left + side] = signs
        candidate = (xa + delta).clamp(0, 1)
        new_margin = _margin(model, candidate, y[active], eot)
        better = new_margin < margin[active]
        idx = active[better]
        x_best[idx] = candidate[better]
        margin[idx] = new_margin[better]
    return x_best.detach()


class SquareAttack:
    """The registered `square` attack (L-inf)."""

    def __init__(self, config):
        self.config = config

    def perturb(self, model, x, y, target=None):
        if target is not None:
            raise ValueError("the square attack is untargeted; set targeted = false")
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        return square_linf(model, x, y, cfg.eps, cfg.queries, cfg.p_init, cfg.eot, gen)
