"""Differentiable optimizers over parameter dicts, for unrolled inner loops (dataset distillation).

``torch.optim`` updates parameters in place and cuts the autograd graph; these functional steps return
new tensors, so the parameters after K steps stay a differentiable function of the data, the labels
and the hyperparameters (``lr`` may be a tensor that requires grad). Use them with
``torch.func.functional_call(model, params, (x,))``::

    params = dict(model.named_parameters())
    state = None
    for x, y in batches:
        loss = F.cross_entropy(functional_call(model, params, (x,)), y)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        params, state = adam_step(params, dict(zip(params, grads)), lr, state=state)

The update rules are torch.optim.SGD's and torch.optim.Adam's (coupled weight decay, PyTorch's
momentum buffer convention, Adam's bias corrections), operation for operation, so K steps reproduce
``torch.optim`` to rounding. One departure, in the backward pass only: Adam's ``sqrt(v)`` has an
infinite derivative at ``v = 0`` (a coordinate whose gradient has been exactly 0), which would turn
the hypergradient into NaN; we take its derivative there as 0 (the forward value is unchanged).
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

Params = dict[str, torch.Tensor]


def sgd_step(params: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor], lr: float | torch.Tensor,
             momentum: float = 0.0, state: dict | None = None, *, weight_decay: float = 0.0,
             dampening: float = 0.0, nesterov: bool = False) -> tuple[Params, dict]:
    """One step of torch.optim.SGD, functionally: returns ``(new_params, new_state)``.

    ``state`` is None at the first step, then what the previous call returned (the momentum buffers).
    Parameters without a gradient (``grads[name]`` missing or None) are kept as they are.
    """
    buffers = dict(state["momentum_buffer"]) if state else {}
    new = {}
    for name, p in params.items():
        g = grads.get(name)
        if g is None:
            new[name] = p
            continue
        if weight_decay != 0:
            g = g + weight_decay * p
        if momentum != 0:
            buf = buffers.get(name)
            buf = g if buf is None else momentum * buf + (1 - dampening) * g
            buffers[name] = buf
            g = g + momentum * buf if nesterov else buf
        new[name] = p - lr * g
    return new, {"momentum_buffer": buffers}


def adam_step(params: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor], lr: float | torch.Tensor,
              betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, state: dict | None = None, *,
              weight_decay: float = 0.0) -> tuple[Params, dict]:
    """One step of torch.optim.Adam (no amsgrad), functionally: returns ``(new_params, new_state)``.

    ``state`` is None at the first step, then what the previous call returned (step count, first and
    second moments). Parameters without a gradient are kept as they are.
    """
    beta1, beta2 = betas
    step = (state["step"] if state else 0) + 1
    exp_avg = dict(state["exp_avg"]) if state else {}
    exp_avg_sq = dict(state["exp_avg_sq"]) if state else {}
    bias_correction1 = 1 - beta1 ** step
    bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
    new = {}
    for name, p in params.items():
        g = grads.get(name)
        if g is None:
            new[name] = p
            continue
        if weight_decay != 0:
            g = g + weight_decay * p
        m = exp_avg.get(name)
        v = exp_avg_sq.get(name)
        m = torch.lerp(torch.zeros_like(g) if m is None else m, g, 1 - beta1)
        v = (torch.zeros_like(g) if v is None else v) * beta2 + (1 - beta2) * (g * g)
        exp_avg[name], exp_avg_sq[name] = m, v
        denom = _safe_sqrt(v) / bias_correction2_sqrt + eps
        new[name] = p - (lr / bias_correction1) * (m / denom)
    return new, {"step": step, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}


def _safe_sqrt(v: torch.Tensor) -> torch.Tensor:
    """sqrt(v) with derivative 0 (not inf) where v == 0; the same values as torch.sqrt, and like it
    keeps only its output for the backward pass (an unrolled window holds one per parameter and step)."""
    return _SafeSqrt.apply(v)


class _SafeSqrt(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v):
        out = v.sqrt()
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        positive = out > 0
        return torch.where(positive, grad / (2 * torch.where(positive, out, torch.ones_like(out))),
                           torch.zeros_like(grad))


def flatten_params(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """All parameters as one 1-D vector, in the dict's order (differentiable)."""
    return torch.cat([p.reshape(-1) for p in params.values()])


def unflatten_params(flat: torch.Tensor, like: Mapping[str, torch.Tensor]) -> Params:
    """The inverse of :func:`flatten_params`: a dict shaped like ``like`` whose values are views of ``flat``."""
    total = sum(p.numel() for p in like.values())
    if total != flat.numel():
        raise ValueError(f"the vector has {flat.numel()} entries but the parameters have {total}")
    out, offset = {}, 0
    for name, p in like.items():
        out[name] = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
    return out
