"""Models: parameter counts, shapes on 28x28x1 and 32x32x3, features, shared options.

Oracles: closed-form parameter counts, torchvision's ResNet-18 and VGG layers
(same weights loaded, same outputs), exact arithmetic identities for
init_scale and temperature, positive homogeneity of bias-free ReLU nets.
Full-size models are built on the meta device (shapes and counts, no compute);
numerical checks use narrow variants.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import deepscope_standard
from deepscope_standard import models as M
from deepscope_standard.models_config import MODELS
from deepscope import ConfigError, DatasetInfo, Network, structure_component
from deepscope.testing import make_host

GRAY = DatasetInfo("gray", 10, (1, 28, 28), (0.3,), (0.35,))
RGB = DatasetInfo("rgb", 10, (3, 32, 32), (0.5, 0.45, 0.4), (0.25, 0.25, 0.26))
CONFIGS = {name: (getattr(M, attr), cls) for name, attr, cls, _ in MODELS}
# narrow variants for numerical tests (full widths are exercised on the meta device)
NARROW = {"mlp": {"widths": [16, 8]}, "convnet": {"width": 8}, "vgg-11": {"width_factor": 1 / 16},
          "vgg-16": {"width_factor": 1 / 16}, "vgg-19": {"width_factor": 1 / 16}, "resnet-18": {"width": 4},
          "preact-resnet-18": {"width": 4}}
FULL = {"mlp": {"widths": [100]}, "convnet": {"width": 128}, "vgg-11": {"width_factor": 1.0},
        "vgg-16": {"width_factor": 1.0}, "vgg-19": {"width_factor": 1.0}, "resnet-18": {"width": 64},
        "preact-resnet-18": {"width": 64}}


def build(name: str, info: DatasetInfo, seed: int | None = 0, **params) -> nn.Module:
    factory, cls = CONFIGS[name]
    if seed is not None:
        torch.manual_seed(seed)
    return factory(cls(**{**NARROW.get(name, {}), **params}), info)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


@pytest.fixture(scope="module")
def registry():
    return make_host(deepscope_standard).registry


# --------------------------------------------------------------------------- parameter counts


def test_lenet_300_100_count():
    model = build("lenet-300-100", GRAY)
    assert n_params(model) == 266_610 == (784 * 300 + 300) + (300 * 100 + 100) + (100 * 10 + 10)
    assert sum(p.numel() for p in Network(model, GRAY.mean, GRAY.std).prunable_parameters().values()) == 266_200


def test_convnet_count_is_exactly_320010():
    with torch.device("meta"):
        model = build("convnet", RGB, seed=None, width=128)
    w = 128
    conv = lambda cin: cin * w * 9 + w  # noqa: E731
    expected = conv(3) + 2 * conv(w) + 3 * (2 * w) + (w * 4 * 4) * 10 + 10
    assert n_params(model) == expected == 320_010
    assert sum(isinstance(m, nn.GroupNorm) and m.num_groups == m.num_channels == w for m in model.modules()) == 3


@pytest.mark.parametrize("info", [GRAY, RGB], ids=["28x28x1", "32x32x3"])
@pytest.mark.parametrize("widths,bias", [([7], True), ([300, 100], False), ([5, 9, 3], True), ([1], False)])
def test_mlp_count_formula(info, widths, bias):
    chain = [info.num_inputs, *widths, info.num_classes]
    expected = sum(a * b + (b if bias else 0) for a, b in zip(chain, chain[1:]))
    assert n_params(build("mlp", info, widths=widths, bias=bias)) == expected


def test_lenet_5_count():
    # conv5x5(6), conv5x5(16), fc120, fc84, fc10; flatten = 16 * s * s with s = ((H - 4) // 2 - 4) // 2
    for info, s in ((RGB, 5), (GRAY, 4)):
        c = info.channels
        expected = (c * 6 * 25 + 6) + (6 * 16 * 25 + 16) + (16 * s * s * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
        assert n_params(build("lenet-5", info)) == expected
    weights = Network(build("lenet-5", RGB), RGB.mean, RGB.std).prunable_parameters()
    assert sum(p.numel() for p in weights.values()) == 61_770  # the pruning literature's LeNet-5 on CIFAR-10


def test_preact_resnet18_count_formula():
    with torch.device("meta"):
        model = build("preact-resnet-18", RGB, seed=None, width=64)
    expected, cin = 3 * 64 * 9, 64
    for stage, stride in enumerate((1, 2, 2, 2)):
        cout = 64 * 2 ** stage
        for block_in, block_stride in ((cin, stride), (cout, 1)):
            expected += 2 * block_in + block_in * cout * 9 + 2 * cout + cout * cout * 9
            expected += block_in * cout if (block_stride != 1 or block_in != cout) else 0
        cin = cout
    expected += 2 * 512 + 512 * 10 + 10
    assert n_params(model) == expected


def _copy_in_order(source: nn.Module, target: nn.Module) -> None:
    """Load ``source``'s state into ``target`` entry by entry (same architecture, other names)."""
    src, dst = list(source.state_dict().values()), target.state_dict()
    assert [tuple(v.shape) for v in src] == [tuple(v.shape) for v in dst.values()]
    target.load_state_dict(dict(zip(dst, src)))


def test_resnet18_matches_torchvision_with_cifar_stem():
    from torchvision.models import resnet18

    ours = build("resnet-18", RGB, width=64).eval()
    theirs = resnet18(num_classes=10)
    theirs.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    theirs.maxpool = nn.Identity()
    theirs.eval()
    assert n_params(ours) == n_params(theirs)
    _copy_in_order(ours, theirs)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,cfg", [("vgg-11", "A"), ("vgg-16", "D"), ("vgg-19", "E")])
def test_vgg_matches_torchvision_layers(name, cfg):
    from torchvision.models.vgg import cfgs, make_layers

    with torch.device("meta"):
        ours = build(name, RGB, seed=None, width_factor=1.0)
        theirs = nn.Sequential(make_layers(cfgs[cfg], batch_norm=True), nn.Flatten(), nn.Linear(512, 10))
    assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in theirs.parameters()]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in ours.modules()) == sum(isinstance(c, int) for c in cfgs[cfg])


def test_vgg11_outputs_match_torchvision():
    from torchvision.models.vgg import cfgs, make_layers

    ours = build("vgg-11", RGB, width_factor=1.0).eval()
    theirs = nn.Sequential(make_layers(cfgs["A"], batch_norm=True), nn.Flatten(), nn.Linear(512, 10)).eval()
    _copy_in_order(ours, theirs)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- shapes and features


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("info", [GRAY, RGB], ids=["28x28x1", "32x32x3"])
def test_full_size_shapes_on_meta(name, info):
    with torch.device("meta"):
        model = build(name, info, seed=None, **FULL.get(name, {}))
        x = torch.empty(3, *info.input_shape)
        assert model(x).shape == (3, 10)
        assert model.features(x).shape == (3, model.classifier.in_features)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("info", [GRAY, RGB], ids=["28x28x1", "32x32x3"])
def test_network_features_and_prunable_weights(name, info):
    body = build(name, info)
    net = Network(body, info.mean, info.std).eval()
    x = torch.rand(4, *info.input_shape)
    with torch.no_grad():
        logits, hooked = net.forward_with_features(x)
        features = net.features(x)
    assert logits.shape == (4, info.num_classes)
    assert net.classifier is body.classifier
    assert features.shape == (4, body.classifier.in_features)
    torch.testing.assert_close(features, hooked, rtol=0, atol=0)
    torch.testing.assert_close(body.classifier(features), logits, rtol=0, atol=0)
    expected = {f"body.{n}.weight" for n, m in body.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    assert set(net.prunable_parameters()) == expected


def test_other_class_counts_and_tiny_inputs():
    info = DatasetInfo("c100", 100, (3, 32, 32), (0.5,) * 3, (0.25,) * 3)
    assert build("resnet-18", info)(torch.rand(2, 3, 32, 32)).shape == (2, 100)
    small = DatasetInfo("small", 3, (1, 8, 8), (0.5,), (0.25,))
    assert build("vgg-16", small)(torch.rand(2, 1, 8, 8)).shape == (2, 3)  # pools stop at 1x1


def test_too_small_input_is_a_config_error(registry):
    spec, issues = structure_component(registry, "model", {"use": "convnet", "depth": 6}, "$.model")
    assert issues == []
    with pytest.raises(ConfigError) as err:
        spec.build(GRAY)
    assert err.value.issues[0].path == "$.model.depth" and "too small" in err.value.issues[0].message
    with pytest.raises(ConfigError, match="too small for lenet-5"):
        build("lenet-5", DatasetInfo("t", 2, (1, 8, 8), (0.5,), (0.5,)))


# --------------------------------------------------------------------------- shared options


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("init", ["default", "kaiming-normal"])
def test_init_scale_multiplies_weights_exactly(name, init):
    alpha = 0.37
    ref = build(name, RGB, init=init)
    scaled = build(name, RGB, init=init, init_scale=alpha)
    scaled_params = dict(scaled.named_parameters())
    in_layers = {f"{n}.{p}" for n, m in ref.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))
                 for p in ("weight", "bias") if getattr(m, p, None) is not None}
    assert in_layers
    for pname, p in ref.named_parameters():
        expected = p * alpha if pname in in_layers else p  # norm layers keep their init
        assert torch.equal(scaled_params[pname], expected), pname


@pytest.mark.parametrize("name", list(CONFIGS))
def test_temperature_divides_logits_exactly(name):
    x = torch.rand(3, *RGB.input_shape)
    ref, hot = build(name, RGB).eval(), build(name, RGB, temperature=7.0).eval()
    with torch.no_grad():
        assert torch.equal(hot(x), ref(x) / 7.0)
        assert torch.equal(hot.features(x), ref.features(x))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_bias_false_removes_every_layer_bias(name):
    model = build(name, GRAY, bias=False)
    assert all(m.bias is None for m in layers(model))
    if name in ("mlp", "lenet-300-100", "lenet-5"):
        assert not [n for n, _ in model.named_parameters() if n.endswith("bias")]
    assert any(m.bias is not None for m in layers(build(name, GRAY, bias=True)))


HOMOGENEOUS = [("mlp", {}), ("mlp", {"activation": "linear"}), ("lenet-300-100", {}), ("lenet-5", {}),
               ("lenet-5", {"pool": "max"}), ("convnet", {"norm": "none"}), ("vgg-11", {"norm": "none"}),
               ("resnet-18", {"norm": "none"}), ("preact-resnet-18", {"norm": "none"})]


@pytest.mark.parametrize("name,params", HOMOGENEOUS)
def test_bias_free_relu_nets_are_positively_homogeneous(name, params):
    x = torch.rand(3, *RGB.input_shape, dtype=torch.float64)
    free = build(name, RGB, bias=False, **params).double()
    biased = build(name, RGB, bias=True, **params).double()
    with torch.no_grad():
        for c in (0.25, 3.0, 17.0):
            torch.testing.assert_close(free(c * x), c * free(x), rtol=1e-10, atol=0)
        assert not torch.allclose(biased(3.0 * x), 3.0 * biased(x), rtol=1e-3, atol=0)


def test_init_schemes_have_the_right_scale():
    for init, std in (("kaiming-normal", math.sqrt(2 / 784)), ("xavier-normal", math.sqrt(2 / (784 + 300)))):
        model = build("lenet-300-100", GRAY, init=init)
        first = model.trunk[1]
        assert first.weight.std().item() == pytest.approx(std, rel=0.02)  # 235,200 samples: std error ~0.15%
        assert abs(first.weight.mean().item()) < 3 * std / math.sqrt(first.weight.numel())
        assert all(torch.count_nonzero(m.bias) == 0 for m in layers(model))
    default = build("lenet-300-100", GRAY)
    bound = 1 / math.sqrt(784)  # PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert default.trunk[1].weight.abs().max().item() <= bound
    assert default.trunk[1].weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)


@pytest.mark.parametrize("activation,module", [("tanh", nn.Tanh), ("sigmoid", nn.Sigmoid), ("gelu", nn.GELU),
                                                ("leaky-relu", nn.LeakyReLU), ("linear", nn.Identity)])
def test_activation_choice(activation, module):
    for name in ("mlp", "lenet-300-100", "lenet-5"):
        model = build(name, GRAY, activation=activation)
        assert sum(isinstance(m, module) for m in model.trunk) >= 2
        assert not any(isinstance(m, nn.ReLU) for m in model.modules())


def test_norm_choices():
    assert not any(isinstance(m, nn.BatchNorm2d) for m in build("vgg-16", RGB, norm="none").modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in build("resnet-18", RGB).modules()) == 1 + 16 + 3
    assert sum(isinstance(m, nn.BatchNorm2d) for m in build("convnet", RGB, norm="batch").modules()) == 3
    plain = build("resnet-18", RGB, norm="none", bias=True)
    assert all(m.bias is not None for m in layers(plain))  # without BN, convs get their biases back


# --------------------------------------------------------------------------- registry and config


def test_registry_and_config_checks(registry):
    assert set(registry.names("model")) >= set(CONFIGS)
    spec, issues = structure_component(registry, "model", {"use": "mlp", "widths": [32, 16], "bias": False,
                                                           "temperature": 2.0, "init": "xavier-normal"}, "$.model")
    assert issues == []
    body = spec.build(GRAY)
    assert [m.out_features for m in layers(body)] == [32, 16, 10] and body.temperature == 2.0
    _, issues = structure_component(registry, "model", {"use": "mlp", "widths": [], "activation": "swish",
                                                        "init_scale": 0.0}, "$.model")
    assert sorted(i.path for i in issues) == ["$.model.activation", "$.model.init_scale", "$.model.widths"]
    _, issues = structure_component(registry, "model", {"use": "resnet-18", "norm": "group"}, "$.model")
    assert [i.path for i in issues] == ["$.model.norm"]
    for name in CONFIGS:
        assert registry.get("model", name).summary


@pytest.mark.parametrize("tables, expected", [
    ('[data]\nuse = "fashion-mnist-sample"\n[model]\nuse = "convnet"\ndepth = 6\n',
     "$.model.depth: the input is too small for convnet of depth 6 (28x28 inputs)"),
    ('[data]\nuse = "cifar10"\nclasses = [0, 10]\n[model]\nuse = "lenet-5"\n',
     "$.data.classes: classes = [0, 10]: cifar10 has classes 0..9"),
])
def test_validate_checks_models_against_the_dataset_shape_without_loading_it(registry, tables, expected):
    from deepscope import parse_pipeline

    with pytest.raises(ConfigError) as err:  # cifar10 is not on this machine: nothing was loaded
        parse_pipeline(f'[run]\nname = "v"\nseed = 0\n{tables}', registry, file="p.toml")
    assert str(err.value).startswith(f"p.toml: {expected}")


# --------------------------------------------------------------------------- exact-reproduction switches


def test_variance_scaling_init_has_the_keras_fan_avg_variance_and_truncation():
    """Var = 2 / ((fan_in + fan_out) / 2) exactly in expectation; no weight beyond 2 raw stddevs."""
    model = build("lenet-5", GRAY, init="variance-scaling")
    for layer in layers(model):
        w = layer.weight
        receptive = w[0, 0].numel() if w.dim() > 2 else 1
        fan_in, fan_out = w.shape[1] * receptive, w.shape[0] * receptive
        target = math.sqrt(4 / (fan_in + fan_out))
        n = w.numel()
        # the sample variance's relative standard error is about sqrt(2 / n) (a bit less when truncated)
        assert w.var().item() == pytest.approx(target ** 2, rel=5 * math.sqrt(2 / n)), layer
        assert w.abs().max().item() <= 2 * target / M.TRUNCATED_STD_RATIO + 1e-7
        assert torch.count_nonzero(layer.bias) == 0
    first = build("lenet-300-100", GRAY, init="variance-scaling").trunk[1].weight
    raw = math.sqrt(4 / (784 + 300)) / M.TRUNCATED_STD_RATIO
    tail = (first.abs() > raw).double().mean().item()  # P(|z| > 1 | |z| < 2) for a standard normal
    expected = (math.erf(2 / math.sqrt(2)) - math.erf(1 / math.sqrt(2))) / math.erf(2 / math.sqrt(2))
    assert tail == pytest.approx(expected, abs=5 * math.sqrt(expected * (1 - expected) / first.numel()))


@pytest.mark.parametrize("name, info, norms", [("lenet-300-100", GRAY, 3), ("lenet-5", GRAY, 5),
                                               ("lenet-5", RGB, 5)])
def test_batch_norm_after_every_layer_the_classifier_included(name, info, norms):
    model = build(name, info, norm="batch")
    bns = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    assert len(bns) == norms
    order = [m for m in model.trunk if not isinstance(m, (nn.Flatten, nn.AvgPool2d, nn.MaxPool2d))]
    for i, m in enumerate(order):  # every weighted layer of the trunk is followed by its norm, then the ReLU
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            assert isinstance(order[i + 1], (nn.BatchNorm1d, nn.BatchNorm2d)) and isinstance(order[i + 2], nn.ReLU)
            assert order[i + 1].num_features == m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
    model.train()
    logits = model(torch.rand(64, *info.input_shape))
    assert logits.mean(0).abs().max().item() < 1e-5  # a BatchNorm on the logits: zero mean per class
    assert logits.var(0, unbiased=False).sub(1).abs().max().item() < 1e-3
    assert isinstance(Network(model, info.mean, info.std).classifier, nn.Linear)


def test_the_defaults_are_unchanged_by_the_switches():
    for name in ("lenet-300-100", "lenet-5"):
        plain, explicit = build(name, GRAY), build(name, GRAY, norm="none", init="default")
        assert list(plain.state_dict()) == list(explicit.state_dict())
        assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), explicit.state_dict().values()))
        assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in plain.modules())
        assert "head_norm" not in dict(plain.named_modules())
