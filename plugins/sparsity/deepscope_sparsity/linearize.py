"""The linearized network behind effective masks and SynFlow scores.

A copy of any model built from standard torch layers in which every
activation, normalization and dropout is the identity, max-pooling is
average-pooling and biases are zero; functional calls inside ``forward``
(``F.relu``, ``F.max_pool2d``, softmax) too, where the model traces with
torch.fx (``functional.py``). With non-negative weights and an
all-ones input, every intermediate value is a sum of non-negative path
products, so nothing cancels: a weight gets a non-zero gradient-times-weight
score exactly when it lies on an input-to-output path.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.modules import activation as _activation
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.dropout import _DropoutNd

import deepscope

from .functional import linearize_functional

_ACTIVATIONS = tuple(
    cls for cls in vars(_activation).values()
    if isinstance(cls, type) and issubclass(cls, nn.Module) and cls is not nn.Module
    and cls is not nn.MultiheadAttention
)
_NORMS = (_NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, deepscope.Normalize)
_MAX_TO_AVG = {nn.MaxPool1d: nn.AvgPool1d, nn.MaxPool2d: nn.AvgPool2d, nn.MaxPool3d: nn.AvgPool3d}
_ADAPTIVE_MAX_TO_AVG = {nn.AdaptiveMaxPool1d: nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool2d: nn.AdaptiveAvgPool2d,
                        nn.AdaptiveMaxPool3d: nn.AdaptiveAvgPool3d}


def linear_stand_in(module: nn.Module) -> nn.Module | None:
    """What replaces ``module`` in the linearized copy (None: keep it)."""
    if isinstance(module, _ACTIVATIONS + _NORMS) or isinstance(module, _DropoutNd):
        return nn.Identity()
    avg = _MAX_TO_AVG.get(type(module))
    if avg is not None:
        return avg(module.kernel_size, module.stride, module.padding, ceil_mode=module.ceil_mode)
    adaptive = _ADAPTIVE_MAX_TO_AVG.get(type(module))
    if adaptive is not None:
        return adaptive(module.output_size)
    return None


class _Binarize(torch.autograd.Function):
    """Replaces values by their indicator (x != 0) going forward and gradients by theirs going back.

    Reachability needs only zero patterns, and a per-element indicator keeps
    every zero pattern while resetting every non-zero to 1. Rescaling a whole
    layer by its maximum cannot do that: a thin path beside a dense block
    differs from it by a factor of (fan-in)^depth within one layer, which
    underflows float64 after a few hundred layers. With indicators after every
    weighted layer, values and gradients stay within a few layers' fan-in of 1
    at any depth. The backward pass is straight-through (the indicator's own
    derivative is zero), which is the gradient pattern of the linear network.
    """

    @staticmethod
    def forward(ctx, x):
        return (x.detach() != 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return (grad != 0).to(grad.dtype)


class LinearizedNetwork:
    """A linearized copy of a model (float64 unless asked) whose prunable weights can be overwritten and scored."""

    def __init__(self, model: nn.Module, input_shape, names=None, dtype: torch.dtype = torch.float64):
        net = copy.deepcopy(model)
        _replace_modules(net)
        net = linearize_functional(net, model_label(model))
        net.eval()
        self.net = net.to(dtype)
        self.dtype = dtype
        self.input_shape = tuple(input_shape)
        prunable = deepscope.prunable_parameters(net)
        self.names = list(names) if names is not None else list(prunable)
        params = dict(net.named_parameters())
        self.params = {name: params[name] for name in self.names}
        with torch.no_grad():
            for buffer in net.buffers():  # fixed filters (e.g. Gabor banks) keep their paths, not their signs
                if buffer.is_floating_point():
                    buffer.abs_()
            for name, p in params.items():
                if name in self.params:
                    p.requires_grad_(True)
                    continue
                p.requires_grad_(False)
                if name.endswith("bias"):
                    p.zero_()
                else:  # other learnable scales stay positive so they cannot cut a path
                    p.abs_()
        self.binarize = False
        owners = {name.rpartition(".")[0] for name in self.names}
        for module_name, module in net.named_modules():
            # every weighted layer, prunable or not, so no run of layers grows values unchecked
            if module_name in owners or next(module.parameters(recurse=False), None) is not None:
                module.register_forward_hook(self._maybe_binarize)

    def _maybe_binarize(self, module, inputs, output):
        if self.binarize and isinstance(output, torch.Tensor) and output.is_floating_point():
            return _Binarize.apply(output)
        return output

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    def bind(self, flat: torch.Tensor) -> None:
        """Make the scored weights views of ``flat`` (one vector, ``names`` order), so that writing
        into it (pruning in place) changes the network without copying every tensor each time."""
        start = 0
        with torch.no_grad():
            for p in self.params.values():
                part = flat[start:start + p.numel()].view_as(p)
                part.copy_(p)
                p.data = part
                start += p.numel()

    def flat_gradient(self, out: torch.Tensor) -> torch.Tensor:
        """dR/dW of the current weights (no binarization) written into the flat vector ``out``."""
        x = torch.ones((1, *self.input_shape), dtype=self.dtype, device=self.device)
        result = self.net(x)
        if isinstance(result, (tuple, list)):
            result = result[0]
        grads = torch.autograd.grad(result.sum(), list(self.params.values()), allow_unused=True)
        parts = [torch.zeros(p.numel(), dtype=self.dtype, device=self.device) if g is None else g.reshape(-1)
                 for p, g in zip(self.params.values(), grads)]
        return torch.cat(parts, out=out)

    def gradients(self, weights: dict[str, torch.Tensor], binarize: bool) -> dict[str, torch.Tensor]:
        """dR/dW for R = sum of outputs on an all-ones input, with the given non-negative weights.

        With ``binarize`` only the zero pattern of the result is meaningful (effective masks);
        without it the values are the true path sums (SynFlow scores).
        """
        with torch.no_grad():
            for name, p in self.params.items():
                w = weights.get(name)
                p.copy_(torch.ones_like(p) if w is None else w.to(p.device, self.dtype))
        self.binarize = binarize
        try:
            x = torch.ones((1, *self.input_shape), dtype=self.dtype, device=self.device)
            out = self.net(x)
            if isinstance(out, (tuple, list)):
                out = out[0]
            grads = torch.autograd.grad(out.sum(), list(self.params.values()), allow_unused=True)
        finally:
            self.binarize = False
        return {name: torch.zeros_like(p) if g is None else g
                for (name, p), g in zip(self.params.items(), grads)}


def model_label(model: nn.Module) -> str:
    """The class a user wrote (the body inside deepscope's Network wrapper)."""
    body = getattr(model, "body", None)
    return type(body if isinstance(body, nn.Module) else model).__name__


def _replace_modules(root: nn.Module) -> None:
    for name, child in list(root.named_children()):
        stand_in = linear_stand_in(child)
        if stand_in is not None:
            setattr(root, name, stand_in)
        else:
            _replace_modules(child)
