"""FAB, the fast adaptive boundary attack (Croce & Hein, ICML 2020), and its targeted version FAB-T.

FAB looks for the *smallest* perturbation that changes the prediction: at each step it
linearizes the decision boundary between the true class and one other class at the current
point, projects both the current point and the original input onto that hyperplane (inside
the [0, 1] box), and moves to a convex combination of the two projections, biased towards
the original input (``alpha_max``) and slightly past the boundary (``eta``). Whenever the
point is adversarial it is recorded if it is the closest so far and pulled back towards the
input (``beta``). FAB-T (AutoAttack's standard version) does this once per target: the
``target_classes`` highest-ranked wrong classes in turn, each with one gradient per step;
untargeted FAB picks, at each step, the class whose linearized boundary is nearest, which
needs the gradient of every logit.

An example counts as broken when the closest adversarial point found lies within ``eps``.
The projections are exact up to a bisection on one scalar: for L-inf the smallest radius t
whose box-clipped corner ``clip(t sign(w))`` reaches the hyperplane, for L2 the multiplier
of ``clip(lambda w)`` (the KKT form of the nearest point of a hyperplane within a box).
"""

from __future__ import annotations

import torch

BISECTION_STEPS = 50


def _box_point(w: torch.Tensor, scale: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, norm: str) -> torch.Tensor:
    """The candidate step at one value of the scalar: ``clip(t sign(w))`` (L-inf) or ``clip(lambda w)`` (L2)."""
    if norm == "linf":
        step = torch.sign(w) * scale[:, None]
    else:
        step = w * scale[:, None]
    return torch.minimum(torch.maximum(step, lo), hi)


def project(points: torch.Tensor, w: torch.Tensor, c: torch.Tensor, norm: str) -> torch.Tensor:
    """The smallest step d (in ``norm``) with w.(p + d) = c and 0 <= p + d <= 1, row by row.

    ``points`` and ``w`` are (n, D), ``c`` is (n,). Where the box cannot reach the hyperplane
    the step that gets closest is returned (the box's far corner).
    """
    need = c - (w * points).sum(1)
    flip = torch.where(need < 0, -1.0, 1.0).to(w)
    w, need = w * flip[:, None], need.abs()  # now a step must raise w.d to `need` >= 0
    lo, hi = -points, 1.0 - points
    if norm == "linf":
        top = torch.ones_like(need)
    else:  # grow the multiplier until the box-clipped step reaches the plane (or saturates)
        top = need / (w.pow(2).sum(1) + 1e-30)
        for _ in range(64):
            short = (w * _box_point(w, top, lo, hi, norm)).sum(1) < need
            if not bool(short.any()):
                break
            top = torch.where(short, top * 2, top)
    bottom = torch.zeros_like(need)
    for _ in range(BISECTION_STEPS):
        middle = (bottom + top) / 2
        reached = (w * _box_point(w, middle, lo, hi, norm)).sum(1) >= need
        top = torch.where(reached, middle, top)
        bottom = torch.where(reached, bottom, middle)
    return _box_point(w, top, lo, hi, norm)


def _norms(d: torch.Tensor, norm: str) -> torch.Tensor:
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


def _logit_gap_and_gradient(model, x: torch.Tensor, y: torch.Tensor, other: torch.Tensor):
    """f = z_other - z_y at x (boundary at f = 0, adversarial side f > 0) and its input gradient."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        logits = model(xg)
        rows = torch.arange(len(y), device=y.device)
        gap = logits[rows, other] - logits[rows, y]
        (grad,) = torch.autograd.grad(gap.sum(), xg)
    return gap.detach(), grad.detach()


def _nearest_boundary(model, x: torch.Tensor, y: torch.Tensor, norm: str):
    """Untargeted FAB: the class whose linearized boundary is nearest, with its gap and gradient."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        logits = model(xg)
        rows = torch.arange(len(y), device=y.device)
        gaps, grads = [], []
        for k in range(logits.shape[1]):
            gap = logits[:, k] - logits[rows, y]
            (grad,) = torch.autograd.grad(gap.sum(), xg, retain_graph=k + 1 < logits.shape[1])
            gaps.append(gap.detach())
            grads.append(grad.detach())
    gaps, grads = torch.stack(gaps, 1), torch.stack(grads, 1)  # (n, K), (n, K, ...)
    dual = grads.flatten(2).abs().sum(2) if norm == "linf" else grads.flatten(2).norm(dim=2)
    distance = gaps.abs() / (dual + 1e-12)
    distance[rows, y] = float("inf")
    k = distance.argmin(1)
    return gaps[rows, k], grads[rows, k]


def _run(model, x0: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, start: torch.Tensor,
         best: torch.Tensor, best_x: torch.Tensor, norm: str, steps: int, alpha_max: float, eta: float,
         beta: float) -> None:
    """One FAB run from ``start``; updates ``best`` (closest adversarial norm) and ``best_x`` in place."""
    flat0 = x0.flatten(1)
    current = start.clone()
    for _ in range(steps):
        if target is None:
            gap, grad = _nearest_boundary(model, current, y, norm)
        else:
            gap, grad = _logit_gap_and_gradient(model, current, y, target)
        w = grad.flatten(1)
        c = (w * current.flatten(1)).sum(1) - gap  # the linearized boundary: w.x = c
        # both points onto the same plane in one batched projection (the bisection loop runs once)
        d_current, d_origin = project(torch.cat([current.flatten(1), flat0]), torch.cat([w, w]),
                                      torch.cat([c, c]), norm).chunk(2)
        a1 = _norms(d_current, norm).clamp_min(1e-8)
        a2 = _norms(d_origin, norm).clamp_min(1e-8)
        alpha = (a1 / (a1 + a2)).clamp(0.0, alpha_max)[:, None]
        moved = ((current.flatten(1) + eta * d_current) * (1 - alpha) + (flat0 + eta * d_origin) * alpha)
        current = moved.clamp(0.0, 1.0).view_as(x0)
        with torch.no_grad():
            fooled = model(current).argmax(1) != y
        if bool(fooled.any()):
            size = _norms((current - x0).flatten(1), norm)
            closer = fooled & (size < best)
            best[closer] = size[closer]
            best_x[closer] = current[closer]
            current = torch.where(fooled.view(-1, *[1] * (x0.dim() - 1)), x0 + (current - x0) * beta, current)


def _random_start(x0: torch.Tensor, radius: torch.Tensor, norm: str, generator: torch.Generator) -> torch.Tensor:
    """A random point at half of ``radius`` in the threat model's norm (the reference's restarts)."""
    shape = (len(x0), -1)
    if norm == "linf":
        t = torch.rand(x0.shape, generator=generator).to(x0) * 2 - 1
        t = t / t.reshape(shape).abs().amax(1).clamp_min(1e-12).view(-1, *[1] * (x0.dim() - 1))
    else:
        t = torch.randn(x0.shape, generator=generator).to(x0)
        t = t / t.reshape(shape).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x0.dim() - 1))
    return (x0 + radius.view(-1, *[1] * (x0.dim() - 1)) * t * 0.5).clamp(0.0, 1.0)


@torch.no_grad()
def fab(model, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf", steps: int = 100,
        restarts: int = 1, target_classes: int = 9, alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """FAB-T over the ``target_classes`` highest-ranked wrong classes (0: untargeted FAB).

    Returns, per example, the closest adversarial point found if it lies within ``eps``
    (in ``norm``), else the input. Only examples the model classifies correctly are
    attacked, and each further target or restart only those not broken yet (as the
    reference); restarts after the first start at a random point at eps / 2.
    """
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    out = x.clone()
    logits = model(x)
    todo = torch.nonzero(logits.argmax(1) == y).flatten()
    if len(todo) == 0:
        return out
    x0, y0 = x[todo], y[todo]
    best = torch.full((len(todo),), float("inf"), device=x.device, dtype=x.dtype)
    best_x = x0.clone()
    ranked = logits[todo].argsort(1, descending=True)
    count = min(target_classes, ranked.shape[1] - 1)
    targets = [None] if target_classes == 0 else [ranked[:, k] for k in range(1, count + 1)]
    for target in targets:
        for restart in range(restarts):
            left = torch.nonzero(best > eps).flatten()  # as the reference: only examples not broken yet
            if len(left) == 0:
                break
            xs, part_best, part_x = x0[left], best[left], best_x[left]
            start = xs if restart == 0 else _random_start(xs, torch.full_like(part_best, eps), norm, generator)
            _run(model, xs, y0[left], None if target is None else target[left], start, part_best, part_x, norm,
                 steps, alpha_max, eta, beta)
            best[left], best_x[left] = part_best, part_x
    inside = best <= eps
    out[todo[inside]] = best_x[inside]
    return out


class FAB:
    """The registered ``fab`` attack (FAB-T by default; untargeted with ``target_classes = 0``)."""

    def __init__(self, config):
        self.config = config
        self._generator = None

    def perturb(self, model, x, y, target=None):
        from deepscope import ConfigError

        if target is not None:
            raise ConfigError("fab picks its own targets (target_classes); set targeted = false", key="targeted")
        c = self.config
        if self._generator is None:  # one stream over the stage's batches, seeded once
            self._generator = torch.Generator().manual_seed(c.seed)
        return fab(model, x, y, eps=c.eps, norm=c.norm, steps=c.steps, restarts=c.restarts,
                   target_classes=c.target_classes, alpha_max=c.alpha_max, eta=c.eta, beta=c.beta,
                   generator=self._generator)
