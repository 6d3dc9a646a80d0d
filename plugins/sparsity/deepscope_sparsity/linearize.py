"""The linearized network behind effective masks and SynFlow scores.

A copy of any model built from standard torch layers in which every
activation, normalization and dropout is the identity, max-pooling is
average-pooling and biases are zero. With non-negative weights and an
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


class _Rescale(torch.autograd.Function):
    """Divides values by their maximum going forward and gradients by theirs going back.

    Positive per-layer factors change no zero pattern, and they keep every
    layer's values near 1, so depth can neither underflow nor overflow them.
    """

    @staticmethod
    def forward(ctx, x):
        peak = x.detach().abs().amax()
        return x / peak if peak > 0 else x.clone()

    @staticmethod
    def backward(ctx, grad):
        peak = grad.abs().amax()
        return grad / peak if peak > 0 else grad


class LinearizedNetwork:
    """A linearized float64 copy of a model whose prunable weights can be overwritten and scored."""

    def __init__(self, model: nn.Module, input_shape, names=None):
        net = copy.deepcopy(model)
        _replace_modules(net)
        net.eval()
        self.net = net.double()
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
        self.rescale = False
        owners = {name.rpartition(".")[0] for name in self.names}
        for module_name, module in net.named_modules():
            if module_name in owners:  # the layers that own prunable weights
                module.register_forward_hook(self._maybe_rescale)

    def _maybe_rescale(self, module, inputs, output):
        return _Rescale.apply(output) if self.rescale else output

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    def gradients(self, weights: dict[str, torch.Tensor], rescale: bool) -> dict[str, torch.Tensor]:
        """dR/dW for R = sum of outputs on an all-ones input, with the given non-negative weights."""
        with torch.no_grad():
            for name, p in self.params.items():
                w = weights.get(name)
                p.copy_(torch.ones_like(p) if w is None else w.to(p.device, torch.float64))
        self.rescale = rescale
        try:
            x = torch.ones((1, *self.input_shape), dtype=torch.float64, device=self.device)
            out = self.net(x)
            if isinstance(out, (tuple, list)):
                out = out[0]
            grads = torch.autograd.grad(out.sum(), list(self.params.values()), allow_unused=True)
        finally:
            self.rescale = False
        return {name: torch.zeros_like(p) if g is None else g
                for (name, p), g in zip(self.params.items(), grads)}


def _replace_modules(root: nn.Module) -> None:
    for name, child in list(root.named_children()):
        stand_in = linear_stand_in(child)
        if stand_in is not None:
            setattr(root, name, stand_in)
        else:
            _replace_modules(child)
