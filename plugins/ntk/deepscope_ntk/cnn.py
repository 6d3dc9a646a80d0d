"""Model ``adv-ntk-cnn``: the official code's ``CNN_mega`` (Tsili42/adv-ntk, robust_train_CNN.py), in PyTorch.

conv32-conv32-maxpool-conv64-conv64-conv128-conv128-avgpool-dense, 3x3 convolutions with 'SAME' padding
and ReLU, 2x2 pools of stride 2. Initialized as Flax does: kernels from a truncated normal of variance
1/fan_in (lecun_normal), biases 0; the kernel's dynamics depend on the initialization scale.
"""

from __future__ import annotations

import math

import torch
from torch import nn

WIDTHS = (32, 32, "max", 64, 64, 128, 128, "avg")
TRUNCATED_STD = 0.87962566103423978  # std of a standard normal truncated to [-2, 2]


def lecun_normal_(weight: torch.Tensor) -> None:
    fan_in = weight[0].numel()
    std = math.sqrt(1.0 / fan_in) / TRUNCATED_STD
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class AdvNTKCNN(nn.Module):
    def __init__(self, channels: int, side: int, num_classes: int):
        super().__init__()
        layers, c = [], channels
        for width in WIDTHS:
            if width == "max":
                layers.append(nn.MaxPool2d(2, 2))
                side //= 2
            elif width == "avg":
                layers.append(nn.AvgPool2d(2, 2))
                side //= 2
            else:
                layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
                c = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c * side * side, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                lecun_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def make_adv_ntk_cnn(config, info) -> AdvNTKCNN:
    channels, side = info.input_shape[0], info.input_shape[-1]
    return AdvNTKCNN(channels, side, info.num_classes)
