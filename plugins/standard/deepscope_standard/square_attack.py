"""Square (Andriushchenko et al. 2020): a query-only random search, L-inf and L2.

It reads only the model's outputs, so uninformative gradients cannot fool it; it is
AutoAttack's gradient-free member (5000 queries, p_init 0.8 there and here). A
candidate is kept when it lowers the margin (correct logit minus the best other,
averaged over ``eot`` draws for randomized models); an example stops once fooled.
The window size follows the reference schedule, rescaled to the query budget. It
never changes ``model.training``.
"""

from __future__ import annotations

import math

import torch


def margin(model, x: torch.Tensor, y: torch.Tensor, eot: int = 1) -> torch.Tensor:
    """Correct logit minus the best other, averaged over ``eot`` draws (< 0: misclassified)."""
    with torch.no_grad():
        total = torch.zeros(len(x), device=x.device)
        for _ in range(eot):
            logits = model(x).float()
            correct = logits.gather(1, y[:, None]).squeeze(1)
            total += correct - logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return total / eot


def square_fraction(p_init: float, it: int, n_iters: int) -> float:
    """The reference schedule: the window's pixel fraction halves at fixed fractions of the budget."""
    it = int(it / n_iters * 10000)
    for bound, divisor in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64),
                           (6000, 128), (8000, 256)):
        if it <= bound:
            return p_init / divisor
    return p_init / 512


def square(model, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf", queries: int = 5000,
           p_init: float = 0.8, eot: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Adversarial examples within ``eps`` of ``x`` (in ``norm``) and inside [0, 1], from model queries only."""
    if norm not in ("linf", "l2"):
        raise ValueError(f"'norm' must be 'linf' or 'l2': {norm!r}")
    if x.dim() != 4:
        raise ValueError(f"square needs image batches (N, C, H, W); got shape {tuple(x.shape)}")
    x = x.detach()
    if eps == 0:
        return x.clone()
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    search = _Search(x, gen)
    run = _linf if norm == "linf" else _l2
    return run(model, x, y, eps, queries, p_init, eot, search)


class _Search:
    """The random draws of one attack, from one generator (on the CPU, moved to x's device)."""

    def __init__(self, x: torch.Tensor, gen: torch.Generator):
        self.device, self.gen = x.device, gen

    def uniform(self, *shape) -> torch.Tensor:
        return torch.rand(shape, generator=self.gen).to(self.device)

    def signs(self, *shape) -> torch.Tensor:
        return torch.where(self.uniform(*shape) < 0.5, -1.0, 1.0)

    def position(self, size: int, side: int) -> int:
        return int(self.uniform(1).item() * (size - side + 1))


def _accept(model, x, y, eot, x_best, best_margin, candidates, active) -> None:
    """Keep each active example's candidate where it lowers the margin (in place)."""
    new_margin = margin(model, candidates, y[active], eot)
    better = new_margin < best_margin[active]
    idx = active[better]
    x_best[idx] = candidates[better]
    best_margin[idx] = new_margin[better]


def _linf(model, x, y, eps, queries, p_init, eot, search):
    b, c, h, w = x.shape
    x_best = (x + eps * search.signs(b, c, 1, w)).clamp(0, 1)  # vertical stripes of +-eps
    best_margin = margin(model, x_best, y, eot)
    n_iters = max(queries - 1, 1)
    for it in range(n_iters):
        active = (best_margin > 0).nonzero().flatten()
        if len(active) == 0:
            break
        side = max(int(round(math.sqrt(square_fraction(p_init, it, n_iters) * h * w))), 1)
        side = min(side, h - 1, w - 1) if min(h, w) > 1 else 1
        top, left = search.position(h, side), search.position(w, side)
        xa = x[active]
        delta = x_best[active] - xa
        delta[:, :, top:top + side, left:left + side] = eps * search.signs(len(active), c, 1, 1)
        _accept(model, x, y, eot, x_best, best_margin, (xa + delta).clamp(0, 1), active)
    return x_best.detach()


def window_pattern(side: int, search: _Search) -> torch.Tensor:
    """The reference's L2 window: two halves of nested rectangles weighted 1/k^2, opposite signs, unit norm."""
    pattern = torch.zeros(side, side, device=search.device)
    pattern[:side // 2] = _rectangles(side // 2, side, search.device)
    pattern[side // 2:] = -_rectangles(side - side // 2, side, search.device)
    pattern /= pattern.norm()
    return pattern.T if search.uniform(1).item() > 0.5 else pattern


def _rectangles(rows: int, cols: int, device) -> torch.Tensor:
    """Concentric rectangles around the centre, the k-th (from 1) adding 1/k^2; unit norm."""
    out = torch.zeros(rows, cols, device=device)
    if rows == 0:
        return out
    r0, c0 = rows // 2, cols // 2
    for k in range(max(r0 + 1, c0 + 1)):
        out[max(r0 - k, 0):min(r0 - k + 2 * k + 1, rows), max(c0 - k, 0):min(c0 - k + 2 * k + 1, cols)] += \
            1.0 / (k + 1) ** 2
    return out / out.norm()


def _l2_norms(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def _to_radius(delta: torch.Tensor, eps: float) -> torch.Tensor:
    return delta / (_l2_norms(delta) + 1e-12) * eps


def _l2(model, x, y, eps, queries, p_init, eot, search):
    b, c, h, w = x.shape
    delta = torch.zeros_like(x)
    tile = max(h // 5, 1)
    offset = (h - tile * 5) // 2 if h >= 5 else 0
    for row in range(offset, offset + tile * (h // tile), tile):  # a grid of windows, random sign each
        for col in range(offset, offset + tile * (w // tile), tile):
            if row + tile <= h and col + tile <= w:
                delta[:, :, row:row + tile, col:col + tile] += \
                    window_pattern(tile, search) * search.signs(b, c, 1, 1)
    x_best = (x + _to_radius(delta, eps)).clamp(0, 1)
    best_margin = margin(model, x_best, y, eot)
    n_iters = max(queries - 1, 1)
    for it in range(n_iters):
        active = (best_margin > 0).nonzero().flatten()
        if len(active) == 0:
            break
        side = max(int(round(math.sqrt(square_fraction(p_init, it, n_iters) * h * w))), 3)
        side = min(side + (side % 2 == 0), h, w)
        xa = x[active]
        current = x_best[active] - xa
        top, left = search.position(h, side), search.position(w, side)  # the window that gets new mass
        top2, left2 = search.position(h, side), search.position(w, side)  # the window that gives it up
        window = (slice(None), slice(None), slice(top, top + side), slice(left, left + side))
        window2 = (slice(None), slice(None), slice(top2, top2 + side), slice(left2, left2 + side))
        both = torch.zeros_like(xa)
        both[window] = 1.0
        both[window2] = 1.0
        old = current[window]
        old_unit = old / (old.flatten(2).norm(dim=2).view(*old.shape[:2], 1, 1) + 1e-12)
        fresh = window_pattern(side, search) * search.signs(len(active), c, 1, 1) + old_unit
        # the window may take the mass of both windows plus what the whole image has left, shared by channels
        budget = ((eps ** 2 - _l2_norms(current) ** 2).clamp_min(0) / c + _l2_norms(current * both) ** 2).sqrt()
        fresh = fresh / (fresh.flatten(2).norm(dim=2).view(*fresh.shape[:2], 1, 1) + 1e-12) * budget
        current[window2] = 0.0
        current[window] = fresh
        _accept(model, x, y, eot, x_best, best_margin, (xa + _to_radius(current, eps)).clamp(0, 1), active)
    return x_best.detach()


class SquareAttack:
    """The registered ``square`` attack (untargeted; L-inf or L2)."""

    def __init__(self, config):
        self.config = config
        self._generator = None

    def perturb(self, model, x, y, target=None):
        from deepscope import ConfigError

        if target is not None:
            raise ConfigError("the square attack is untargeted; set targeted = false", key="targeted")
        c = self.config
        if self._generator is None:  # one stream over the stage's batches, seeded once
            self._generator = torch.Generator().manual_seed(c.seed)
        return square(model, x, y, eps=c.eps, norm=c.norm, queries=c.queries, p_init=c.p_init, eot=c.eot,
                      generator=self._generator)
