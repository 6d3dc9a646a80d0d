"""Back-ends behind a front-end: built from the registry on the front-end's output shape.

A front-end turns a (C, H, W) image into a (K, h, w) feature map. The back-end
is any registered model: it receives a DatasetInfo whose ``input_shape`` is
(K, h, w) (mean 0 and std 1: the front-end already normalizes), so models that
size themselves from the info (channels, spatial size) adapt on their own.
"""

from __future__ import annotations

import attrs
import torch
from torch import nn


def frontend_info(info, shape: tuple[int, int, int]):
    """The DatasetInfo a back-end sees: the front-end's output shape, identity normalization."""
    channels = int(shape[0])
    return attrs.evolve(info, name=f"{info.name}/frontend", input_shape=tuple(int(s) for s in shape),
                        mean=(0.0,) * channels, std=(1.0,) * channels)


def build_backend(spec, info, shape: tuple[int, int, int]) -> nn.Module:
    """Build the ``backend`` component for ``shape``.

    ``spec`` is the ComponentSpec the core checked from a pipeline's ``backend`` (or its
    default), or a plain ``{"use": ...}`` dict when the config was built directly in Python.
    """
    sub_info = frontend_info(info, shape)
    if isinstance(spec, dict):
        return _build_from_dict(spec, sub_info)
    body = spec.build(sub_info)
    if not isinstance(body, nn.Module):
        raise TypeError(f"backend {spec.name!r} returned {type(body).__name__}, not a torch.nn.Module")
    return body


def _build_from_dict(table: dict, info) -> nn.Module:
    params = {k: v for k, v in table.items() if k != "use"}
    if table.get("use") == "frontend-cnn":  # our own default: no registry lookup needed
        from .configs import FrontendCNNConfig

        return build_frontend_cnn(FrontendCNNConfig(**params), info)
    import deepscope

    spec, issues = deepscope.structure_component(deepscope.get_host().registry, "model", dict(table), "backend")
    if issues:
        raise deepscope.ConfigError(issues)
    return spec.build(info)


def conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class FrontendCNN(nn.Module):
    """Two conv blocks (the second at half resolution when the map is >= 8 px), global pool, linear.

    Small on purpose: behind a J=2 scattering (81*C x 8x8) it trains in minutes on a CPU;
    on raw 32x32 images it is the plain-CNN baseline with the same back-end.
    """

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, width: int = 64, depth: int = 2):
        super().__init__()
        c, h, w = in_shape
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += conv_bn_relu(c if i == 0 else width, width)
        if min(h, w) >= 8:
            layers.append(nn.MaxPool2d(2))
        for i in range(depth):
            layers += conv_bn_relu(width if i == 0 else 2 * width, 2 * width)
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.trunk = nn.Sequential(*layers)
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.trunk(x))


def build_frontend_cnn(config, info) -> FrontendCNN:
    return FrontendCNN(tuple(info.input_shape), info.num_classes, width=config.width, depth=config.depth)
