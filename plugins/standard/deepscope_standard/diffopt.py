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
``torch.optim`` bit for bit. Each parameter's update is one autograd node with a hand-written backward
pass (``_SGDUpdate``, ``_AdamUpdate``): far fewer elementwise kernels than autograd replaying every op,
which matters in an unrolled window. That backward is once differentiable (a meta-gradient is a
first derivative through the updates). One departure, in the backward pass only: Adam's ``sqrt(v)``
has an infinite derivative at ``v = 0`` (a coordinate whose gradient has been exactly 0), which would
turn the hypergradient into NaN; we take its derivative there as 0 (the forward value is unchanged).
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
        if momentum != 0:
            new[name], buffers[name] = _SGDUpdate.apply(p, g, buffers.get(name), lr, momentum, dampening,
                                                        weight_decay, nesterov)
            continue
        if weight_decay != 0:
            g = g.add(p, alpha=weight_decay)
        new[name] = p - lr * g if isinstance(lr, torch.Tensor) else p.add(g, alpha=-lr)
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
            g = g.add(p, alpha=weight_decay)
        m = exp_avg.get(name)
        v = exp_avg_sq.get(name)
        new[name], exp_avg[name], exp_avg_sq[name] = _AdamUpdate.apply(
            p, g, torch.zeros_like(g) if m is None else m, torch.zeros_like(g) if v is None else v, lr,
            beta1, beta2, eps, bias_correction1, bias_correction2_sqrt)
    return new, {"step": step, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}


class _SGDUpdate(torch.autograd.Function):
    """One parameter's SGD-with-momentum update, (p, g, buf, lr) -> (p', buf'), with a hand-written backward.

    torch.optim.SGD's single-tensor arithmetic, op for op (the first buffer is a copy of the gradient,
    undamped). The update is linear in (p, g, buf), so its backward needs nothing saved but the step
    direction, and only for a tensor lr that requires grad. Once differentiable, as :class:`_AdamUpdate`.
    """

    @staticmethod
    def forward(ctx, p, g, buf, lr, momentum, dampening, weight_decay, nesterov):
        if weight_decay != 0:
            g = g.add(p, alpha=weight_decay)
        buf_new = g.clone() if buf is None else (buf * momentum).add_(g, alpha=1 - dampening)
        direction = g.add(buf_new, alpha=momentum) if nesterov else buf_new
        lr_is_tensor = isinstance(lr, torch.Tensor)
        p_new = p - lr * direction if lr_is_tensor else p.add(direction, alpha=-lr)
        ctx.save_for_backward(lr if lr_is_tensor else None,
                              direction if lr_is_tensor and ctx.needs_input_grad[3] else None)
        ctx.constants = (None if lr_is_tensor else lr, momentum, dampening, weight_decay, nesterov, buf is None)
        ctx.set_materialize_grads(False)
        return p_new, buf_new

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_p, grad_buf):
        lr_tensor, direction = ctx.saved_tensors
        lr_value, momentum, dampening, weight_decay, nesterov, first = ctx.constants
        lr = lr_value if lr_tensor is None else lr_tensor
        grad_g = None                                 # with respect to g + weight_decay p
        if grad_p is not None:
            via_direction = -lr * grad_p
            if nesterov:
                grad_g = via_direction
                via_direction = momentum * via_direction
            grad_buf = via_direction if grad_buf is None else grad_buf + via_direction
        grad_old_buf = None
        if grad_buf is not None:
            from_buf = grad_buf if first else (1 - dampening) * grad_buf
            grad_g = from_buf if grad_g is None else grad_g + from_buf
            if not first and ctx.needs_input_grad[2]:
                grad_old_buf = momentum * grad_buf
        grad_param = grad_p
        if weight_decay != 0 and grad_g is not None:
            grad_param = weight_decay * grad_g if grad_param is None else grad_param.add(grad_g, alpha=weight_decay)
        grad_lr = None
        if ctx.needs_input_grad[3] and grad_p is not None:
            grad_lr = (-(grad_p * direction)).sum_to_size(lr_tensor.shape)
        return (grad_param if ctx.needs_input_grad[0] else None, grad_g if ctx.needs_input_grad[1] else None,
                grad_old_buf, grad_lr, None, None, None, None)


class _AdamUpdate(torch.autograd.Function):
    """One parameter's Adam update, (p, g, m, v, lr) -> (p', m', v'), with a hand-written backward pass.

    The forward is torch.optim.Adam's single-tensor arithmetic, op for op. Left to autograd, its ten
    elementwise ops each record a node and replay their derivative; here the backward is a few fused
    expressions, and it saves only g, m', sqrt(v') and the denominator. An unrolled window runs it once
    per parameter and step, and its elementwise work rivals the network's matrix products (a third of
    a meta-step of an MLP). sqrt(v') has derivative 0, not inf, where v' = 0 (see the module docstring).
    The backward is once differentiable: a meta-gradient needs the first derivative of the update only.
    """

    @staticmethod
    def forward(ctx, p, g, m, v, lr, beta1, beta2, eps, bias_correction1, bias_correction2_sqrt):
        m_new = torch.lerp(m, g, 1 - beta1)
        v_new = (v * beta2).addcmul_(g, g, value=1 - beta2)
        root = v_new.sqrt()
        denom = (root / bias_correction2_sqrt).add_(eps)
        step_size = lr / bias_correction1
        lr_is_tensor = isinstance(lr, torch.Tensor)
        if lr_is_tensor:
            p_new = p - step_size * (m_new / denom)
        else:
            p_new = torch.addcdiv(p, m_new, denom, value=-step_size)
        ctx.save_for_backward(g, m_new, root, denom, lr if lr_is_tensor else None)
        ctx.constants = (None if lr_is_tensor else lr, beta1, beta2, bias_correction1, bias_correction2_sqrt)
        ctx.set_materialize_grads(False)
        return p_new, m_new, v_new

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_p, grad_m, grad_v):
        g, m_new, root, denom, lr_tensor = ctx.saved_tensors
        lr_value, beta1, beta2, bias_correction1, bias_correction2_sqrt = ctx.constants
        step_size = (lr_value if lr_tensor is None else lr_tensor) / bias_correction1
        grad_lr = None
        if grad_p is not None:
            scaled = grad_p / denom                          # d p' / d (m' / denom), times the incoming grad
            via_m = -step_size * scaled
            grad_m = via_m if grad_m is None else grad_m + via_m
            # through denom = sqrt(v') / c2 + eps: (step_size m' / denom^2) (1 / c2) (1 / (2 sqrt(v')))
            via_v = (scaled * m_new).div_(denom).mul_(step_size / (2 * bias_correction2_sqrt))
            via_v = via_v.div_(root).masked_fill_(root == 0, 0.0)
            grad_v = via_v if grad_v is None else grad_v + via_v
            if ctx.needs_input_grad[4]:
                grad_lr = (-(grad_p * (m_new / denom)) / bias_correction1).sum_to_size(lr_tensor.shape)
        grad_g = None
        if ctx.needs_input_grad[1]:
            grad_g = torch.zeros_like(g) if grad_m is None else (1 - beta1) * grad_m
            if grad_v is not None:
                grad_g = grad_g.addcmul_(g, grad_v, value=2 * (1 - beta2))
        return (grad_p if ctx.needs_input_grad[0] else None, grad_g,
                beta1 * grad_m if grad_m is not None and ctx.needs_input_grad[2] else None,
                beta2 * grad_v if grad_v is not None and ctx.needs_input_grad[3] else None,
                grad_lr, None, None, None, None, None)


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
