"""The NTK-parameterized fully connected ReLU network whose infinite-width kernel ``analytic`` gives."""

from __future__ import annotations

import math

import torch
from torch import nn


class NTKDense(nn.Module):
    """``W_std / sqrt(fan_in) * W x + b_std * b`` with W, b ~ N(0, 1), as neural-tangents' Dense."""

    def __init__(self, fan_in: int, fan_out: int, w_std: float, b_std: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(fan_out, fan_in))
        self.bias = nn.Parameter(torch.randn(fan_out))
        self.w_scale, self.b_std = w_std / math.sqrt(fan_in), b_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_scale * (x @ self.weight.T) + self.b_std * self.bias


class NTKMLP(nn.Module):
    """``depth`` hidden layers of ``width`` ReLU units, then a Dense readout to the classes."""

    def __init__(self, num_inputs: int, num_outputs: int, *, width: int, depth: int, w_std: float,
                 b_std: float):
        super().__init__()
        sizes = [num_inputs] + [width] * depth
        self.hidden = nn.ModuleList(NTKDense(i, o, w_std, b_std) for i, o in zip(sizes, sizes[1:]))
        self.classifier = NTKDense(sizes[-1], num_outputs, w_std, b_std)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for layer in self.hidden:
            h = torch.relu(layer(h))
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def make_ntk_mlp(config, info) -> NTKMLP:
    return NTKMLP(info.num_inputs, info.num_classes, width=config.width, depth=config.depth,
                  w_std=config.w_std, b_std=config.b_std)
