"""Distiller ``adversarial-kip``: KIP whose target loss is taken at adversarial points (arXiv:2207.11727).

Tsilivis, Su & Kempe cast "robustness from data alone" as a bilevel problem on kernel regression:
min over the support X_s of E max_{|delta| <= eps} l(K(x + delta, X_s)(K_ss + lambda I)^-1 Y_s, y). The inner
maximization is PGD on the closed-form predictor of the current support (held fixed); the outer step is
KIP's Adam step with the perturbation detached, which is the gradient of the max by Danskin's theorem
when the maximizer is unique. No official code was released; this follows the paper's description.
"""

from __future__ import annotations

import torch

from deepscope_ntk import KIP, hard_classes, predicted_classes, ridge_system
from deepscope_standard import ascend


def krr_predictor(kernel, support: torch.Tensor, labels: torch.Tensor, reg: float):
    """f(z) = K(z, X_s)(K_ss + lambda I)^-1 Y_s with the support held fixed (the inner problem's model)."""
    support, labels = support.detach(), labels.detach()
    with torch.no_grad():
        k_ss = kernel(support)
        alpha = torch.linalg.solve(ridge_system(k_ss, reg), labels.to(k_ss.dtype))
    return lambda z: kernel(z, support) @ alpha


def target_losses(preds: torch.Tensor, yt: torch.Tensor) -> torch.Tensor:
    """KIP's loss per target: 1/2 mean over outputs of (f - y)^2 (its mean over targets is kip_loss)."""
    return 0.5 * (preds - yt.to(torch.float64)).pow(2).mean(1)


def per_target_loss(predict, z: torch.Tensor, yt: torch.Tensor) -> torch.Tensor:
    """:func:`target_losses` of the predictor at the points z."""
    return target_losses(predict(z), yt)


def random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random point of the eps-ball around x (linf: per coordinate; l2: uniform in volume)."""
    if norm == "linf":
        noise = (2 * torch.rand(x.shape, generator=generator, dtype=x.dtype) - 1) * eps
    else:
        direction = torch.randn(x.shape, generator=generator, dtype=x.dtype).flatten(1)
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
        radius = eps * torch.rand(len(x), 1, generator=generator, dtype=x.dtype) ** (1.0 / direction.shape[1])
        noise = (direction * radius).reshape(x.shape)
    return (x + noise.to(x.device)).clamp(0.0, 1.0)


def adversarial_targets(predict, xt: torch.Tensor, yt: torch.Tensor, *, eps: float, norm: str = "linf",
                        steps: int = 10, step_size: float | None = None, restarts: int = 1,
                        random_start_: bool = True, generator: torch.Generator | None = None):
    """PGD on the per-target loss of ``predict`` inside the eps-ball and [0, 1].

    Every target keeps its highest-loss point over the clean input, every iterate and every restart, so
    the adversarial loss is never below the clean loss. Returns (x_adv, clean_preds, clean_loss, adv_loss),
    all detached.
    """
    alpha = 2.5 * eps / steps if step_size is None else step_size
    xt = xt.detach()
    with torch.no_grad():
        clean_preds = predict(xt)
        clean = target_losses(clean_preds, yt)
    best, best_loss = xt, clean
    view = (-1,) + (1,) * (xt.dim() - 1)

    def keep(z, loss):
        nonlocal best, best_loss
        better = loss > best_loss
        best = torch.where(better.view(view), z, best)
        best_loss = torch.where(better, loss, best_loss)

    def gradient(z):  # the ascent's gradient, and each iterate it visits scored on the way
        z = z.detach().requires_grad_(True)
        loss = per_target_loss(predict, z, yt)
        (grad,) = torch.autograd.grad(loss.sum(), z)
        keep(z.detach(), loss.detach())
        return grad

    for _ in range(restarts):
        z = random_start(xt, eps, norm, generator) if random_start_ else xt
        z = ascend(xt, z, gradient, eps=eps, step_size=alpha, steps=steps, norm=norm)
        with torch.no_grad():
            keep(z, per_target_loss(predict, z, yt))
    return best, clean_preds, clean, best_loss


class AdversarialKIP(KIP):
    """``adversarial-kip``: KIP's step loop (checkpoints, probes, resume) with adversarial target points."""

    method = "adversarial-kip"

    def target_points(self, kernel, support, labels, xt, yt, reg, generator):
        cfg = self.config
        if cfg.eps == 0:  # exactly kip: no attack, no random draws
            return xt, {}
        predict = krr_predictor(kernel, support, labels, reg)
        x_adv, clean_preds, clean, _ = adversarial_targets(
            predict, xt, yt, eps=cfg.eps, norm=cfg.norm, steps=cfg.attack_steps, step_size=cfg.attack_step_size,
            restarts=cfg.restarts, random_start_=cfg.random_start, generator=generator)
        hard = hard_classes(yt)
        delta = (x_adv - xt).flatten(1)
        return x_adv, {"clean_loss": clean.mean().item(),
                       "clean_target_acc": (predicted_classes(clean_preds) == hard).double().mean().item(),
                       "perturbation_linf": delta.abs().max().item(),
                       "perturbation_l2": delta.norm(dim=1).max().item()}
