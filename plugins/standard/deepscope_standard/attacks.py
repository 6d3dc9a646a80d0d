"""FGSM and PGD (linf / l2) on inputs in [0, 1], as functions and as attack components.

Performance rules: the caller owns ``model.training`` (never toggled here),
gradients are taken with ``torch.autograd.grad`` with respect to the input only
(no parameter ``.grad`` is touched), each step costs one forward and one
backward per EOT sample, and iterates are updated without redundant copies.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

Norm = Literal["linf", "l2"]

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def adversarial_objective(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None,
                          loss: str = "ce") -> torch.Tensor:
    """Per-example value the attack maximizes (targeted: moves towards ``target``)."""
    if logits.dtype in (torch.float16, torch.bfloat16):  # autocast: the loss in float32
        logits = logits.float()
    labels = y if target is None else target
    if loss == "ce":
        ce = F.cross_entropy(logits, labels, reduction="none")
        return ce if target is None else -ce
    if loss == "margin":
        chosen = logits.gather(1, labels[:, None]).squeeze(1)
        others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(1)
        return others - chosen if target is None else chosen - others
    raise ValueError(f"'loss' must be 'ce' or 'margin': {loss!r}")


def attack_succeeded(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    pred = logits.argmax(1)
    return pred != y if target is None else pred == target


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: Norm = "linf", steps: int = 10,
        step_size: float | None = None, restarts: int = 1, random_start: bool = True, eot: int = 1,
        loss: str = "ce", target: torch.Tensor | None = None, autocast: str = "off", channels_last: bool = False,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Adversarial examples within ``eps`` of ``x`` (in ``norm``) and inside [0, 1].

    With several restarts each example keeps the final iterate of one restart: of
    those that fool the model the one with the highest objective, else the one with
    the highest objective (``apgd`` tracks the best iterate inside a run).
    ``step_size`` defaults to ``2.5 * eps / steps``.
    """
    if norm not in ("linf", "l2"):
        raise ValueError(f"'norm' must be 'linf' or 'l2': {norm!r}")
    if steps < 1 or restarts < 1 or eot < 1:
        raise ValueError("'steps', 'restarts' and 'eot' must be >= 1")
    x = x.detach()
    if channels_last and x.is_cuda and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    alpha = 2.5 * eps / steps if step_size is None else step_size
    amp = _autocast(autocast, x.device)
    low, high = _bounds(x, eps, norm)
    best = best_obj = best_success = None
    for _ in range(restarts):
        x_adv = _random_start(x, eps, norm, generator) if random_start else x
        for _ in range(steps):
            grad = _input_gradient(model, x_adv, y, target, loss, eot, amp)
            x_adv = _step(x, x_adv, grad, eps, alpha, norm, low, high)
        if restarts == 1:
            return x_adv
        with torch.no_grad(), amp:
            logits = model(x_adv)
        obj = adversarial_objective(logits, y, target, loss)
        success = attack_succeeded(logits, y, target)
        if best is None:
            best, best_obj, best_success = x_adv, obj, success
            continue
        better = (success & ~best_success) | ((success == best_success) & (obj > best_obj))
        best[better] = x_adv[better]
        best_obj = torch.where(better, obj, best_obj)
        best_success |= success
    return best


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: Norm = "linf", eot: int = 1,
         loss: str = "ce", target: torch.Tensor | None = None, autocast: str = "off",
         channels_last: bool = False) -> torch.Tensor:
    """One gradient step of length ``eps`` from ``x`` (sign step for linf, normalized for l2)."""
    return pgd(model, x, y, eps=eps, norm=norm, steps=1, step_size=eps, restarts=1, random_start=False, eot=eot,
               loss=loss, target=target, autocast=autocast, channels_last=channels_last)


def _autocast(mode: str, device: torch.device):
    if mode == "off" or device.type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=_AUTOCAST_DTYPES[mode])


def _input_gradient(model, x_adv, y, target, loss, eot, amp) -> torch.Tensor:
    """Gradient of the summed objective wrt the input, summed over ``eot`` forward passes.

    A sum rather than a mean: both step rules are invariant to the gradient's scale.
    """
    x_adv = x_adv.detach().requires_grad_(True)
    grad = None
    for _ in range(eot):
        with amp:
            logits = model(x_adv)
        objective = adversarial_objective(logits, y, target, loss).sum()
        (g,) = torch.autograd.grad(objective, x_adv)
        grad = g if grad is None else grad.add_(g)
    return grad


def ascend(x: torch.Tensor, x_adv: torch.Tensor, gradient: Callable[[torch.Tensor], torch.Tensor], *, eps: float,
           step_size: float, steps: int, norm: Norm = "linf", project_start: bool = True) -> torch.Tensor:
    """Projected gradient ascent from ``x_adv``, inside the eps-ball around ``x`` and [0, 1].

    ``gradient(x_adv)`` returns the input gradient of whatever objective the caller
    maximizes; other plugins' inner maximizations (TRADES' KL) use this loop.
    ``project_start = False`` takes the first gradient at ``x_adv`` as given (TRADES'
    reference start, which may lie outside [0, 1]); every step's result is projected.
    """
    low, high = _bounds(x, eps, norm)
    if project_start:
        x_adv = project(x, x_adv, eps, norm)
    for _ in range(steps):
        x_adv = _step(x, x_adv, gradient(x_adv), eps, step_size, norm, low, high)
    return x_adv.detach()


def project(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: Norm = "linf") -> torch.Tensor:
    """The point of the eps-ball around ``x`` intersected with [0, 1] that ``x_adv`` projects to."""
    delta = x_adv.detach() - x
    delta = delta.clamp(-eps, eps) if norm == "linf" else _project_l2(delta, eps)
    return (x + delta).clamp_(0.0, 1.0)


def _bounds(x: torch.Tensor, eps: float, norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    if norm == "linf":  # the feasible box: the ball intersected with [0, 1], as bounds on x_adv
        return (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)
    return -x, 1.0 - x  # bounds on delta = x_adv - x that keep x_adv in [0, 1]


def _step(x: torch.Tensor, x_adv: torch.Tensor, grad: torch.Tensor, eps: float, alpha: float, norm: str,
          low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Ascend, then project onto the eps-ball around ``x`` intersected with [0, 1].

    Clipping to [0, 1] after the l2 projection keeps the ball: it only moves
    coordinates towards ``x``, which lies in the box.
    """
    if norm == "linf":
        return x_adv.detach().add(grad.sign_(), alpha=alpha).clamp_(min=low, max=high)
    shape = (-1,) + (1,) * (x.dim() - 1)
    grad_norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
    delta = x_adv.detach().add(grad.div_(grad_norm), alpha=alpha).sub_(x)
    return _project_l2(delta, eps).clamp_(min=low, max=high).add_(x).clamp_(0.0, 1.0)


def _project_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    shape = (-1,) + (1,) * (delta.dim() - 1)
    norms = delta.flatten(1).norm(dim=1).view(shape)
    return delta.mul_((eps / norms.clamp_min(1e-12)).clamp_max(1.0))


def _random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    """A uniformly random point of the ball around ``x``, clipped to [0, 1]."""
    device = generator.device if generator is not None else x.device
    if norm == "linf":
        noise = torch.empty(x.shape, device=device).uniform_(-eps, eps, generator=generator)
        return (x + noise.to(x.device)).clamp_(0.0, 1.0)
    direction = torch.randn(x.shape, device=device, generator=generator)
    dims = math.prod(x.shape[1:])
    radius = torch.rand(x.shape[0], device=device, generator=generator).pow_(1.0 / dims) * eps
    shape = (-1,) + (1,) * (x.dim() - 1)
    direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
    return (x + (direction * radius.view(shape)).to(x.device)).clamp_(0.0, 1.0)


class GradientAttack:
    """An attack component: ``perturb(model, x, y, target=None)`` with its config's settings."""

    def __init__(self, config):
        self.config = config

    def options(self) -> dict:
        c = self.config
        return dict(eps=c.eps, norm=c.norm, eot=c.eot, loss=c.loss, autocast=c.autocast,
                    channels_last=c.channels_last)


class FGSM(GradientAttack):
    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None):
        return fgsm(model, x, y, target=target, **self.options())


class PGD(GradientAttack):
    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None):
        c = self.config
        return pgd(model, x, y, target=target, steps=c.steps, step_size=c.step_size, restarts=c.restarts,
                   random_start=c.random_start, **self.options())
