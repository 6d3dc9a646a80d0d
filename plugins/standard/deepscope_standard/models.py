"""Standard architectures, built from the dataset info (channels, size, classes).

Every model is a :class:`ClassifierNet`: a ``trunk`` that ends in the
penultimate features, then one ``nn.Linear`` named ``classifier``. The core's
``Network`` finds both (``features(x)`` and ``.classifier``); its default
prunable set is every conv/linear weight. Shared options (init, init scale,
bias, temperature) are applied by one helper, :func:`finish`, so each paper's
variant (homogeneous nets, scaled init, tempered logits) works everywhere.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from deepscope import DatasetInfo

from .models_config import convnet_feature_sizes, lenet5_feature_size

VGG_LAYOUTS = {
    "vgg-11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg-16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg-19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
               512, 512, 512, 512, "M"),
}


class ClassifierNet(nn.Module):
    """``head_norm(classifier(trunk(x).flatten(1))) / temperature``; ``features`` is the classifier's input.

    ``head_norm`` (default none) is a BatchNorm on the logits, as in the official
    effective-sparsity LeNets.
    """

    def __init__(self, trunk: nn.Module, classifier: nn.Linear, temperature: float = 1.0,
                 head_norm: nn.Module | None = None):
        super().__init__()
        self.trunk = trunk
        self.classifier = classifier
        self.temperature = float(temperature)
        if head_norm is not None:
            self.head_norm = head_norm

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.features(x))
        if "head_norm" in self._modules:
            logits = self.head_norm(logits)
        return logits if self.temperature == 1.0 else logits / self.temperature


# --------------------------------------------------------------------------- shared helpers


def activation(name: str) -> nn.Module:
    layers = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "leaky-relu": nn.LeakyReLU,
              "gelu": nn.GELU, "linear": nn.Identity}
    return layers[name]()


def norm2d(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.GroupNorm(channels, channels, affine=True)
    return nn.Identity()


def pool2d(kind: str) -> nn.Module:
    return nn.AvgPool2d(2) if kind == "avg" else nn.MaxPool2d(2)


def variance_scaling_(weight: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
    """Keras VarianceScaling(scale, mode="fan_avg", distribution="normal"), which TF2 draws truncated.

    A normal truncated at two standard deviations, its stddev divided by
    0.8796... (the truncated normal's own stddev ratio) so that the weights'
    variance is exactly scale / ((fan_in + fan_out) / 2).
    """
    receptive = weight[0, 0].numel() if weight.dim() > 2 else 1
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    std = math.sqrt(scale / ((fan_in + fan_out) / 2)) / TRUNCATED_STD_RATIO
    return nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)


#: stddev of a standard normal truncated to [-2, 2]
TRUNCATED_STD_RATIO = 0.87962566103423978


@torch.no_grad()
def finish(model: ClassifierNet, config) -> ClassifierNet:
    """Apply the shared options: ``init`` scheme, then multiply conv/linear parameters by ``init_scale``.

    With ``init_scale_as = "temperature"`` the weights keep scale 1 and the
    logits are divided by ``init_scale ** -L`` instead, L the number of
    conv/linear layers: for a bias-free ReLU net z(a theta) = a^L z(theta), so
    a sweep over ``init_scale`` in both modes puts alpha and its equivalent
    temperature on one axis.
    """
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    scale_weights = config.init_scale != 1.0 and getattr(config, "init_scale_as", "weights") == "weights"
    if config.init_scale != 1.0 and not scale_weights:
        model.temperature *= config.init_scale ** -len(layers)
    for module in layers:
        if config.init == "kaiming-normal":
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif config.init == "xavier-normal":
            nn.init.xavier_normal_(module.weight)
        elif config.init == "variance-scaling":
            variance_scaling_(module.weight)
        if config.init != "default" and module.bias is not None:
            module.bias.zero_()
        if scale_weights:
            module.weight.mul_(config.init_scale)
            if module.bias is not None:
                module.bias.mul_(config.init_scale)
    return model


# --------------------------------------------------------------------------- fully connected


def mlp(info: DatasetInfo, widths: Sequence[int], act: str, bias: bool,
        norm: str = "none") -> tuple[nn.Module, nn.Linear]:
    layers: list[nn.Module] = [nn.Flatten()]
    width = info.num_inputs
    for out in widths:
        layers += [nn.Linear(width, out, bias=bias), *norm1d(norm, out), activation(act)]
        width = out
    return nn.Sequential(*layers), nn.Linear(width, info.num_classes, bias=bias)


def norm1d(kind: str, features: int) -> list[nn.Module]:
    return [nn.BatchNorm1d(features)] if kind == "batch" else []


def head_norm(kind: str, classes: int) -> nn.Module | None:
    return nn.BatchNorm1d(classes) if kind == "batch" else None


def build_mlp(config, info: DatasetInfo) -> ClassifierNet:
    trunk, classifier = mlp(info, config.widths, config.activation, config.bias)
    return finish(ClassifierNet(trunk, classifier, config.temperature), config)


def build_lenet_300_100(config, info: DatasetInfo) -> ClassifierNet:
    trunk, classifier = mlp(info, (300, 100), config.activation, config.bias, config.norm)
    return finish(ClassifierNet(trunk, classifier, config.temperature, head_norm(config.norm, info.num_classes)),
                  config)


# --------------------------------------------------------------------------- convolutional


def build_lenet_5(config, info: DatasetInfo) -> ClassifierNet:
    """conv5x5(6) - pool - conv5x5(16) - pool - fc120 - fc84 - classifier (no padding)."""
    config.check(info)
    c = info.channels
    h, w = lenet5_feature_size(*info.input_shape[1:])
    act, norm = config.activation, config.norm
    bn2d = (lambda n: [nn.BatchNorm2d(n)]) if norm == "batch" else (lambda n: [])
    trunk = nn.Sequential(
        nn.Conv2d(c, 6, 5, bias=config.bias), *bn2d(6), activation(act), pool2d(config.pool),
        nn.Conv2d(6, 16, 5, bias=config.bias), *bn2d(16), activation(act), pool2d(config.pool),
        nn.Flatten(),
        nn.Linear(16 * h * w, 120, bias=config.bias), *norm1d(norm, 120), activation(act),
        nn.Linear(120, 84, bias=config.bias), *norm1d(norm, 84), activation(act),
    )
    return finish(ClassifierNet(trunk, nn.Linear(84, info.num_classes, bias=config.bias), config.temperature,
                                head_norm(norm, info.num_classes)), config)


def build_convnet(config, info: DatasetInfo) -> ClassifierNet:
    """The dataset-distillation ConvNet; 28x28 inputs get padding 3 in the first conv (seen as 32x32)."""
    config.check(info)
    c = info.channels
    layers: list[nn.Module] = []
    for i, (pad, h, w) in enumerate(convnet_feature_sizes(info.input_shape[1], info.input_shape[2], config.depth)):
        layers += [nn.Conv2d(c if i == 0 else config.width, config.width, 3, padding=pad, bias=config.bias),
                   norm2d(config.norm, config.width), nn.ReLU(), pool2d(config.pool)]
    trunk = nn.Sequential(*layers)
    classifier = nn.Linear(config.width * h * w, info.num_classes, bias=config.bias)
    return finish(ClassifierNet(trunk, classifier, config.temperature), config)


def build_vgg(name: str, config, info: DatasetInfo) -> ClassifierNet:
    """VGG with BN; a max-pool that would shrink a 1-pixel map is skipped (28x28 inputs)."""
    c, h, w = info.input_shape
    conv_bias = config.bias
    layers: list[nn.Module] = []
    for item in VGG_LAYOUTS[name]:
        if item == "M":
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            continue
        out = max(1, round(item * config.width_factor))
        layers += [nn.Conv2d(c, out, 3, padding=1, bias=conv_bias), norm2d(config.norm, out), nn.ReLU()]
        c = out
    trunk = nn.Sequential(*layers)
    classifier = nn.Linear(c * h * w, info.num_classes, bias=config.bias)
    return finish(ClassifierNet(trunk, classifier, config.temperature), config)


def build_vgg11(config, info):
    return build_vgg("vgg-11", config, info)


def build_vgg16(config, info):
    return build_vgg("vgg-16", config, info)


def build_vgg19(config, info):
    return build_vgg("vgg-19", config, info)


# --------------------------------------------------------------------------- residual


def conv3x3(cin: int, cout: int, stride: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)


class BasicBlock(nn.Module):
    """Post-activation residual block (He et al. 2016a) with a 1x1 projection on shape change."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str, bias: bool):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride, bias)
        self.bn1 = norm2d(norm, cout)
        self.conv2 = conv3x3(cout, cout, 1, bias)
        self.bn2 = norm2d(norm, cout)
        self.relu = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=bias), norm2d(norm, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016b): BN-ReLU before each conv."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str, bias: bool):
        super().__init__()
        self.bn1 = norm2d(norm, cin)
        self.conv1 = conv3x3(cin, cout, stride, bias)
        self.bn2 = norm2d(norm, cout)
        self.conv2 = conv3x3(cout, cout, 1, bias)
        self.relu = nn.ReLU()
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + skip


def resnet18_trunk(block: type, config, info: DatasetInfo, preact: bool) -> tuple[nn.Sequential, int]:
    """CIFAR stem (3x3 conv, stride 1, no max-pool), 4 stages of 2 blocks, global average pool."""
    # convolutions carry biases only without normalization (a bias before BN is redundant)
    conv_bias = config.bias and config.norm == "none"
    width = config.width
    layers: list[nn.Module] = [conv3x3(info.channels, width, 1, conv_bias)]
    if not preact:
        layers += [norm2d(config.norm, width), nn.ReLU()]
    cin = width
    for stage, stride in enumerate((1, 2, 2, 2)):
        cout = width * 2 ** stage
        layers += [block(cin, cout, stride, config.norm, conv_bias), block(cout, cout, 1, config.norm, conv_bias)]
        cin = cout
    if preact:
        layers += [norm2d(config.norm, cin), nn.ReLU()]
    layers.append(nn.AdaptiveAvgPool2d(1))
    return nn.Sequential(*layers), cin


def build_resnet18(config, info: DatasetInfo) -> ClassifierNet:
    trunk, features = resnet18_trunk(BasicBlock, config, info, preact=False)
    classifier = nn.Linear(features, info.num_classes, bias=config.bias)
    return finish(ClassifierNet(trunk, classifier, config.temperature), config)


def build_preact_resnet18(config, info: DatasetInfo) -> ClassifierNet:
    trunk, features = resnet18_trunk(PreActBlock, config, info, preact=True)
    classifier = nn.Linear(features, info.num_classes, bias=config.bias)
    return finish(ClassifierNet(trunk, classifier, config.temperature), config)
