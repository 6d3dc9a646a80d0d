"""APGD (Croce & Hein 2020): PGD whose step size adapts itself, with momentum and best-iterate tracking.

Each run starts at a random point on the eps-sphere (step size 2 * eps), moves with
momentum 0.75, and at checkpoints (after 22% of the steps, then ever shorter windows,
never under 6%) halves the step of every example whose loss rose in at most ``rho`` of
the window's steps, or whose best loss did not improve since the last checkpoint
without a halving; such an example restarts from its best point. Restarts attack only
the examples not fooled yet. The result per example is the first iterate that fooled
it (the last one of the fooling run), or else the highest-loss iterate of all runs.

The schedule, the start and the checkpoint rule follow the authors' reference code,
including its loss history that reads zero before the first step. Like ``pgd``, it
never toggles ``model.training`` and touches no parameter gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attacks import _autocast, _bounds

LOSSES = ("ce", "dlr", "margin")


def dlr(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Difference-of-logits ratio (to maximize); scale- and shift-invariant in the logits.

    Untargeted: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3); targeted towards t:
    -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2), with z_pi the sorted logits.
    """
    logits = logits.float()
    ranked, order = logits.sort(dim=1)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    if target is None:
        top_is_y = (order[:, -1] == y).float()
        best_other = ranked[:, -2] * top_is_y + ranked[:, -1] * (1.0 - top_is_y)
        return -(z_y - best_other) / (ranked[:, -1] - ranked[:, -3] + 1e-12)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (ranked[:, -1] - 0.5 * ranked[:, -3] - 0.5 * ranked[:, -4] + 1e-12)


def objective(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, loss: str) -> torch.Tensor:
    """Per-example value APGD maximizes; targeted ce is -CE(target), targeted margin z_t - max other."""
    if loss == "dlr":
        return dlr(logits, y, target)
    logits = logits.float()
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="none") if target is None else \
            -F.cross_entropy(logits, target, reduction="none")
    labels = y if target is None else target
    chosen = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(1)
    return others - chosen if target is None else chosen - others


def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf", steps: int = 100,
         restarts: int = 1, loss: str = "ce", eot: int = 1, rho: float = 0.75, target: torch.Tensor | None = None,
         target_classes: int = 0, autocast: str = "off", channels_last: bool = False,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """Adversarial examples within ``eps`` of ``x`` (in ``norm``) and inside [0, 1].

    ``target`` makes it a targeted attack (success: predicted ``target``).
    ``target_classes = k > 0`` is APGD-T: untargeted success, reached by targeted runs
    towards each of the k classes ranked highest after the true one on the clean input
    (``restarts`` runs per target class). ``eot`` averages gradients, losses and logits
    over that many forward passes (randomized models). ``generator`` defaults to seed 0.
    """
    _check(norm, steps, restarts, eot, loss, rho, target, target_classes)
    x = x.detach()
    if channels_last and x.is_cuda and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    amp = _autocast(autocast, x.device)
    with torch.no_grad():
        clean = _mean_logits(model, x, eot, amp)
    needed = 4 if (target is not None or target_classes) else 3
    if loss == "dlr" and clean.shape[1] < needed:
        raise ValueError(f"the dlr loss needs at least {needed} classes here, the model has {clean.shape[1]}; "
                         "use loss = 'ce' or 'margin'")
    done = _succeeded(clean, y, target)  # already misclassified (or on target): x itself is kept
    out = x.clone()
    if eps == 0:
        return out
    best_loss = torch.full((len(x),), float("-inf"), device=x.device)
    if target_classes:
        if target_classes > clean.shape[1] - 1:
            raise ValueError(f"'target_classes' must be at most the number of classes - 1 "
                             f"({clean.shape[1] - 1}): {target_classes}")
        order = clean.sort(dim=1)[1]
        targets = [order[:, -rank] for rank in range(2, target_classes + 2)]
    else:
        targets = [target]
    for tgt in targets:
        for _ in range(restarts):
            idx = (~done).nonzero().flatten()
            if len(idx) == 0:
                return out
            run_target = None if tgt is None else tgt[idx]
            x_best, loss_best, fooled, x_fooled = _single_run(
                model, x[idx], y[idx], run_target, eps=eps, norm=norm, steps=steps, loss=loss, eot=eot, rho=rho,
                amp=amp, generator=gen, on_target=target is not None)
            better = ~fooled & (loss_best > best_loss[idx])
            out[idx[better]] = x_best[better]
            best_loss[idx[better]] = loss_best[better]
            out[idx[fooled]] = x_fooled[fooled]
            done[idx[fooled]] = True
    return out


def _check(norm, steps, restarts, eot, loss, rho, target, target_classes) -> None:
    if norm not in ("linf", "l2"):
        raise ValueError(f"'norm' must be 'linf' or 'l2': {norm!r}")
    if loss not in LOSSES:
        raise ValueError(f"'loss' must be one of {LOSSES}: {loss!r}")
    if steps < 1 or restarts < 1 or eot < 1 or target_classes < 0:
        raise ValueError("'steps', 'restarts' and 'eot' must be >= 1 and 'target_classes' >= 0")
    if not 0.0 < rho < 1.0:
        raise ValueError(f"'rho' must be in (0, 1): {rho}")
    if target is not None and target_classes:
        raise ValueError("give either 'target' (a targeted attack) or 'target_classes' (APGD-T), not both")


def _succeeded(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    pred = logits.argmax(1)
    return pred != y if target is None else pred == target


def _mean_logits(model, x, eot, amp) -> torch.Tensor:
    total = None
    for _ in range(eot):
        with amp:
            logits = model(x).float()
        total = logits if total is None else total + logits
    return total / eot


def _loss_and_grad(model, x_adv, y, target, loss, eot, amp):
    """Mean loss, summed input gradient (scale does not matter to either step rule) and mean logits."""
    x_adv = x_adv.detach().requires_grad_(True)
    grad = losses = logits_sum = None
    for _ in range(eot):
        with amp:
            logits = model(x_adv)
        values = objective(logits, y, target, loss)
        (g,) = torch.autograd.grad(values.sum(), x_adv)
        grad = g if grad is None else grad.add_(g)
        losses = values.detach() if losses is None else losses + values.detach()
        logits_sum = logits.detach().float() if logits_sum is None else logits_sum + logits.detach().float()
    return losses / eot, grad, logits_sum / eot


def _start(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    """A random point on the sphere of radius eps (linf: scaled so that the largest coordinate is eps)."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    if norm == "linf":
        t = 2 * torch.rand(x.shape, generator=gen, device=gen.device).to(x.device) - 1
        size = t.flatten(1).abs().amax(1)
    else:
        t = torch.randn(x.shape, generator=gen, device=gen.device).to(x.device)
        size = t.flatten(1).norm(dim=1) + 1e-12
    return (x + eps * t / size.view(shape)).clamp(0.0, 1.0)


def _project(x, z, eps, norm, low, high, pad: float = 0.0) -> torch.Tensor:
    """Onto the eps-ball around x and [0, 1] (l2: clipping after scaling keeps the ball).

    ``pad`` reproduces the reference's 1e-12 in the radius of the momentum step's projection.
    """
    if norm == "linf":
        return torch.minimum(torch.maximum(z, low), high)
    shape = (-1,) + (1,) * (x.dim() - 1)
    delta = z - x
    size = delta.flatten(1).norm(dim=1).view(shape)
    return (x + delta / (size + 1e-12) * (size + pad).clamp(max=eps)).clamp(0.0, 1.0)


def _direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return grad.sign()
    shape = (-1,) + (1,) * (grad.dim() - 1)
    return grad / (grad.flatten(1).norm(dim=1).view(shape) + 1e-12)


def _single_run(model, x, y, target, *, eps, norm, steps, loss, eot, rho, amp, generator, on_target):
    """One APGD run: (highest-loss iterate, its loss, fooled at some iterate, the fooling iterate)."""
    n, shape = len(x), (-1,) + (1,) * (x.dim() - 1)
    window, min_window, shrink = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    low, high = _bounds(x, eps, "linf") if norm == "linf" else (None, None)
    x_adv = _start(x, eps, norm, generator)
    goal = target if on_target else None  # APGD-T's targeted runs succeed on any wrong class
    values, grad, logits = _loss_and_grad(model, x_adv, y, target, loss, eot, amp)
    fooled = _succeeded(logits, y, goal)
    x_fooled, x_best, grad_best, loss_best = x_adv.clone(), x_adv.clone(), grad.clone(), values.clone()
    step = torch.full((n,), 2.0 * eps, device=x.device).view(shape)
    x_old = x_adv
    history = torch.zeros(steps, n, device=x.device)
    since_check, best_at_check = 0, loss_best.clone()
    halved_at_check = torch.ones(n, dtype=torch.bool, device=x.device)
    with torch.no_grad():
        for i in range(steps):
            momentum = 0.75 if i > 0 else 1.0
            z = _project(x, x_adv + step * _direction(grad, norm), eps, norm, low, high)
            z = x_adv + momentum * (z - x_adv) + (1 - momentum) * (x_adv - x_old)
            z = _project(x, z, eps, norm, low, high, pad=1e-12)
            x_old, x_adv = x_adv, z
            with torch.enable_grad():
                values, grad, logits = _loss_and_grad(model, x_adv, y, target, loss, eot, amp)
            hit = _succeeded(logits, y, goal)
            x_fooled[hit] = x_adv[hit]
            fooled |= hit
            history[i] = values
            improved = values > loss_best
            x_best[improved], grad_best[improved], loss_best[improved] = x_adv[improved], grad[improved], values[improved]
            since_check += 1
            if since_check < window:
                continue
            rows = i - torch.arange(window, device=x.device)  # row -1 wraps to the unfilled (zero) last row
            rises = (history[rows] > history[rows - 1]).sum(0)
            halve = (rises <= window * rho) | (~halved_at_check & (best_at_check >= loss_best))
            halved_at_check, best_at_check = halve, loss_best.clone()
            step[halve] /= 2.0
            x_adv = torch.where(halve.view(shape), x_best, x_adv)
            grad = torch.where(halve.view(shape), grad_best, grad)
            since_check, window = 0, max(window - shrink, min_window)
    return x_best, loss_best, fooled, x_fooled


class APGD:
    """The registered ``apgd`` attack: ``perturb(model, x, y, target=None)`` with its config's settings."""

    def __init__(self, config):
        self.config = config
        self._generator = None

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None):
        from deepscope import ConfigError

        c = self.config
        if target is not None and c.target_classes:
            raise ConfigError("apgd with target_classes > 0 is APGD-T, an untargeted attack; set targeted = "
                              "false, or target_classes = 0 for a targeted attack", key="target_classes")
        if self._generator is None:  # one stream over the stage's batches, seeded once
            self._generator = torch.Generator().manual_seed(c.seed)
        return apgd(model, x, y, eps=c.eps, norm=c.norm, steps=c.steps, restarts=c.restarts, loss=c.loss,
                    eot=c.eot, rho=c.rho, target=target, target_classes=c.target_classes, autocast=c.autocast,
                    channels_last=c.channels_last, generator=self._generator)
