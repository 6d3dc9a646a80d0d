"""Square (Andriushchenko et al., 2020): a gradient-free attack for auditing noisy front-ends.

It only queries the model's outputs, so it cannot be fooled by uninformative
gradients; the gradient-check probe runs it beside deepscope-standard's white-box
`pgd` with the same budget and seed. It never changes model.training.
"""

from __future__ import annotations

import math

import torch


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
