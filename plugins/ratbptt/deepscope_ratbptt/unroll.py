"""The inner loop of one meta-step: a graph-free prefix, then a window of differentiable steps.

``unroll`` trains a parameter dict on batches drawn by a callback, with a functional optimizer
(``deepscope_standard.adam_step``/``sgd_step``) so that the parameters after the window are a
differentiable function of the synthetic batches of the window's steps. The first ``start`` steps
run without a graph (their batches are detached) through ``torch.optim`` itself (its fused
``foreach`` kernels), exactly as the official code's plain ``optimizer.step()`` prefix before
``higher.innerloop_ctx``; the optimizer's state (Adam moments, momentum buffers) carries from the
prefix into the window, as ``higher`` copies it.
"""

from __future__ import annotations

import math
from typing import Callable

import attrs
import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from deepscope_standard import adam_step, sgd_step

Params = dict[str, torch.Tensor]
ADAM_EPS, ADAM_BETA2 = 1e-8, 0.999  # torch.optim.Adam's defaults, which the official inner Adam keeps
#: batches(differentiable) -> (inputs, targets); with differentiable False the inputs carry no graph
Batches = Callable[[bool], tuple[torch.Tensor, torch.Tensor]]


@attrs.define
class InnerOptimizer:
    """The inner optimizer as a pure function of (params, grads, state): torch.optim's update rules.

    ``adam_eps = "higher"`` makes the differentiable steps add Adam's eps where `higher`'s
    DifferentiableAdam (the official window) does, to sqrt(v) before the bias correction: torch's
    update with eps / sqrt(1 - beta2^t). The graph-free prefix stays torch.optim.Adam, as there.
    """

    kind: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    adam_eps: str = "torch"

    def torch_optimizer(self, parameters: list[torch.Tensor]) -> torch.optim.Optimizer:
        """The same update as :meth:`step`, in place and graph-free, for the prefix."""
        if self.kind == "adam":
            return torch.optim.Adam(parameters, lr=self.lr)
        return torch.optim.SGD(parameters, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def state_of(self, optimizer: torch.optim.Optimizer, names: list[str]) -> dict | None:
        """A torch.optim optimizer's state in :meth:`step`'s format (None before its first step)."""
        parameters = optimizer.param_groups[0]["params"]
        per = [optimizer.state.get(p, {}) for p in parameters]
        if not per or not per[0]:
            return None
        if self.kind == "adam":
            return {"step": int(per[0]["step"]), "exp_avg": {n: s["exp_avg"] for n, s in zip(names, per)},
                    "exp_avg_sq": {n: s["exp_avg_sq"] for n, s in zip(names, per)}}
        if self.momentum == 0:
            return {"momentum_buffer": {}}
        return {"momentum_buffer": {n: s["momentum_buffer"] for n, s in zip(names, per)}}

    def step(self, params: Params, grads: Params, state: dict | None) -> tuple[Params, dict]:
        if self.kind == "adam":  # the official inner Adam: torch.optim.Adam(lr), no weight decay
            return adam_step(params, grads, self.lr, eps=self._adam_eps((state or {}).get("step", 0) + 1), state=state)
        if self.kind == "sgd":
            return sgd_step(params, grads, self.lr, self.momentum, state, weight_decay=self.weight_decay)
        raise ValueError(f"unknown inner optimizer {self.kind!r}: use 'adam' or 'sgd'")

    def _adam_eps(self, step: int) -> float:
        """torch.optim.Adam's eps (1e-8) at ``step``, or the eps that gives higher's update in torch's formula."""
        if self.adam_eps == "torch":
            return ADAM_EPS
        if self.adam_eps == "higher":
            return ADAM_EPS / math.sqrt(1 - ADAM_BETA2 ** step)
        raise ValueError(f"unknown Adam eps convention {self.adam_eps!r}: use 'torch' or 'higher'")


def inner_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with hard classes or soft (learned, non-negative) targets, as nn.CrossEntropyLoss."""
    return F.cross_entropy(logits, targets)


def unroll(model: torch.nn.Module, params: Params, optimizer: InnerOptimizer, batches: Batches, *,
           start: int, window: int, buffers: Params | None = None, checkpoint_inner: bool = False) -> Params:
    """``start`` graph-free steps then ``window`` differentiable ones from ``params``; the final params.

    ``window = 0`` returns detached parameters. With ``checkpoint_inner`` each window step's
    activations are recomputed in the backward pass instead of kept (the same gradients).
    """
    names = list(params)
    buffers = dict(buffers or {})
    current, state = _prefix(model, params, buffers, optimizer, batches, start)
    current = {k: v.detach().requires_grad_() for k, v in current.items()}
    state = _detached(state)
    for _ in range(window):
        x, y = batches(True)
        if checkpoint_inner:
            current, state = _checkpointed_step(model, names, current, buffers, optimizer, state, x, y)
        else:
            current, state = _graph_step(model, current, buffers, optimizer, state, x, y)
    return current


def _loss(model, params, buffers, x, y) -> torch.Tensor:
    return inner_loss(functional_call(model, {**params, **buffers}, (x,)), y)


def _prefix(model, params, buffers, optimizer, batches, steps) -> tuple[Params, dict | None]:
    """``steps`` plain optimizer steps on copies of ``params``; (params, optimizer state) after them."""
    names = list(params)
    leaves = [v.detach().clone().requires_grad_() for v in params.values()]
    if steps == 0:
        return dict(zip(names, leaves)), None
    opt = optimizer.torch_optimizer(leaves)
    current = dict(zip(names, leaves))
    with torch.enable_grad():
        for _ in range(steps):
            x, y = batches(False)
            opt.zero_grad(set_to_none=True)
            _loss(model, current, buffers, x.detach(), y.detach()).backward(inputs=leaves)
            opt.step()
    return current, optimizer.state_of(opt, names)


def _graph_step(model, params, buffers, optimizer, state, x, y):
    grads = torch.autograd.grad(_loss(model, params, buffers, x, y), list(params.values()), create_graph=True)
    return optimizer.step(params, dict(zip(params, grads)), state)


def _checkpointed_step(model, names, params, buffers, optimizer, state, x, y):
    """One window step under activation checkpointing: the state is flattened to tensors for checkpoint()."""
    layout, flat_state = _flatten_state(state)

    def step(x_, y_, *tensors):
        p = dict(zip(names, tensors[:len(names)]))
        s = _unflatten_state(layout, tensors[len(names):])
        new, new_state = _graph_step(model, p, buffers, optimizer, s, x_, y_)
        new_layout, new_flat = _flatten_state(new_state)
        step.layout = new_layout
        return (*new.values(), *new_flat)

    out = checkpoint(step, x, y, *params.values(), *flat_state, use_reentrant=False)
    return dict(zip(names, out[:len(names)])), _unflatten_state(step.layout, out[len(names):])


def _flatten_state(state: dict | None):
    """(layout, tensors) of an optimizer state {key: number | {name: tensor}}; numbers stay in the layout."""
    if state is None:
        return None, []
    layout, tensors = [], []
    for key, value in state.items():
        if isinstance(value, dict):
            layout.append((key, list(value)))
            tensors.extend(value.values())
        else:
            layout.append((key, value))
    return layout, tensors


def _unflatten_state(layout, tensors) -> dict | None:
    if layout is None:
        return None
    state, i = {}, 0
    for key, spec in layout:
        if isinstance(spec, list):
            state[key] = dict(zip(spec, tensors[i:i + len(spec)]))
            i += len(spec)
        else:
            state[key] = spec
    return state


def _detached(state: dict | None) -> dict | None:
    if state is None:
        return None
    return {k: ({n: t.detach() for n, t in v.items()} if isinstance(v, dict) else v) for k, v in state.items()}
