"""Model parameters (attrs only; no torch here) and their registration.

Every model shares :class:`ModelConfig` (initialization, init scale, bias,
temperature), so papers on homogeneous nets, init scale or softmax temperature
can use any architecture. Implementations live in ``deepscope_standard.models``.
"""

from __future__ import annotations

from typing import Literal

import attrs

from deepscope import ConfigError, param, positive

_IMPL = "deepscope_standard.models"

Activation = Literal["relu", "tanh", "sigmoid", "leaky-relu", "gelu", "linear"]


def _positive_widths(instance, attribute, value):
    if not value or any(not isinstance(w, int) or w <= 0 for w in value):
        raise ValueError(f"'{attribute.name}' must be a non-empty list of positive integers: {value!r}")


@attrs.define(kw_only=True)
class ModelConfig:
    """Options every standard model accepts."""

    init: Literal["default", "kaiming-normal", "xavier-normal", "variance-scaling"] = param(
        "default", doc="weight init of conv/linear layers ('default' = PyTorch's; the others zero the biases; "
                       "'variance-scaling' = Keras VarianceScaling(2, fan_avg, truncated normal), the official "
                       "effective-sparsity code's)")
    init_scale: float = param(1.0, doc="multiply every conv/linear weight and bias by this after init (alpha)",
                              validator=positive)
    init_scale_as: Literal["weights", "temperature"] = param(
        "weights", doc="how init_scale acts: 'weights' multiplies them; 'temperature' leaves them at scale 1 and "
                       "divides the logits by init_scale^-L (L = conv/linear layers), the same function and, for a "
                       "bias-free ReLU net, the same curvature ratios (H(a*theta) = a^-2 H(theta, T = a^-L))")
    bias: bool = param(True, doc="biases in conv/linear layers (false: bias-free, homogeneous with ReLU)")
    temperature: float = param(1.0, doc="divide the logits by this", validator=positive)


@attrs.define(kw_only=True)
class MLPConfig(ModelConfig):
    """Fully connected network on the flattened input."""

    widths: list[int] = param(factory=lambda: [100], doc="hidden layer widths", validator=_positive_widths)
    activation: Activation = param("relu", doc="hidden activation ('linear' = none)")


@attrs.define(kw_only=True)
class LeNet300Config(ModelConfig):
    """LeNet-300-100: MLP with hidden widths 300 and 100."""

    activation: Activation = param("relu", doc="hidden activation ('linear' = none)")
    norm: Literal["none", "batch"] = param("none", doc="'batch': BatchNorm after every linear layer, the "
                                                       "classifier too (the official effective-sparsity LeNet)")


def lenet5_feature_size(h: int, w: int) -> tuple[int, int]:
    """Height and width of LeNet-5's last feature map (two unpadded 5x5 convs, each then a 2x2 pool)."""
    for _ in range(2):
        h, w = (h - 4) // 2, (w - 4) // 2
    return h, w


def convnet_feature_sizes(h: int, w: int, depth: int) -> list[tuple[int, int, int]]:
    """(padding, height, width) after each ConvNet block; 28x28 inputs get padding 3 first (seen as 32x32)."""
    out = []
    for i in range(depth):
        pad = 3 if i == 0 and (h, w) == (28, 28) else 1
        h, w = (h + 2 * pad - 2) // 2, (w + 2 * pad - 2) // 2
        out.append((pad, h, w))
    return out


def too_small(size: int, what: str, key: str | None = None) -> None:
    if size < 1:
        raise ConfigError(f"the input is too small for {what} (a feature map shrinks to {size} pixels)", key=key)


@attrs.define(kw_only=True)
class LeNet5Config(ModelConfig):
    """LeNet-5: conv5x5(6), pool, conv5x5(16), pool, fc 120, fc 84, classifier."""

    activation: Activation = param("relu", doc="hidden activation ('linear' = none)")
    pool: Literal["avg", "max"] = param("avg", doc="2x2 pooling after each conv")
    norm: Literal["none", "batch"] = param("none", doc="'batch': BatchNorm after every conv and linear layer, "
                                                       "the classifier too (the official effective-sparsity LeNet)")

    def check(self, shape) -> None:
        too_small(min(lenet5_feature_size(*shape.input_shape[1:])), f"lenet-5 ({shape.height}x{shape.width} inputs)")


@attrs.define(kw_only=True)
class ConvNetConfig(ModelConfig):
    """Dataset-distillation ConvNet: [conv3x3, norm, ReLU, avg-pool] x depth, then linear."""

    width: int = param(128, doc="channels of every conv layer", validator=positive)
    depth: int = param(3, doc="number of conv blocks", validator=positive)
    norm: Literal["instance", "batch", "none"] = param(
        "instance", doc="'instance' = GroupNorm(C, C) with affine, as in the reference code")
    pool: Literal["avg", "max"] = param("avg", doc="2x2 pooling after each block")

    def check(self, shape) -> None:
        for _, h, w in convnet_feature_sizes(shape.height, shape.width, self.depth):
            too_small(min(h, w), f"convnet of depth {self.depth} ({shape.height}x{shape.width} inputs)", key="depth")


@attrs.define(kw_only=True)
class VGGConfig(ModelConfig):
    """VGG for CIFAR-sized inputs: 3x3 convs (+BN), max-pools, one linear classifier."""

    norm: Literal["batch", "none"] = param("batch", doc="BatchNorm after every conv, or none")
    width_factor: float = param(1.0, doc="multiply every conv's channel count (1 = the standard VGG)",
                                validator=positive)


@attrs.define(kw_only=True)
class ResNetConfig(ModelConfig):
    """ResNet-18 with the CIFAR stem (3x3 conv, stride 1, no max-pool)."""

    norm: Literal["batch", "none"] = param("batch", doc="BatchNorm in every block, or none")
    width: int = param(64, doc="channels of the first stage (doubles at each of the 3 later stages)",
                       validator=positive)


MODELS = (
    ("mlp", "build_mlp", MLPConfig, "Fully connected network (widths, activation, bias)"),
    ("lenet-300-100", "build_lenet_300_100", LeNet300Config, "LeNet-300-100 fully connected network"),
    ("lenet-5", "build_lenet_5", LeNet5Config, "LeNet-5 convolutional network"),
    ("convnet", "build_convnet", ConvNetConfig,
     "Dataset-distillation ConvNet (width 128, depth 3, instance norm; 320,010 params on CIFAR-10)"),
    ("vgg-11", "build_vgg11", VGGConfig, "VGG-11 (BN, single linear classifier), CIFAR-sized"),
    ("vgg-16", "build_vgg16", VGGConfig, "VGG-16 (BN, single linear classifier), CIFAR-sized"),
    ("vgg-19", "build_vgg19", VGGConfig, "VGG-19 (BN, single linear classifier), CIFAR-sized"),
    ("resnet-18", "build_resnet18", ResNetConfig, "ResNet-18 with the CIFAR stem"),
    ("preact-resnet-18", "build_preact_resnet18", ResNetConfig, "Pre-activation ResNet-18 with the CIFAR stem"),
)


def register(register) -> None:
    for name, attr, config_cls, doc in MODELS:
        register(name, f"{_IMPL}:{attr}", config_cls, doc=doc)
