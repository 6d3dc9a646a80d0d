"""Which layers are read, and that hooks read what a manual forward computes."""

from __future__ import annotations

import torch
from torch import nn

from deepscope_collapse.measure import class_means, scatter
from deepscope_collapse.metrics import MeanAccumulator
from deepscope_collapse.taps import PENULTIMATE, FeatureTaps, block_outputs
from deepscope import Network


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))


class Residual(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)
        self.bn = nn.BatchNorm2d(ch)

    def forward(self, x):
        return torch.relu(x + self.bn(self.conv(x)))


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features_ = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                                       Residual(4))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.classifier = nn.Linear(4, 3)

    def forward(self, x):
        return self.classifier(self.flat(self.pool(self.features_(x))))


def test_blocks_of_an_mlp_end_at_activations_and_skip_the_classifier():
    body = mlp()
    names = [name for name, _ in block_outputs(body, body[5])]
    assert names == ["2", "4"]


def test_blocks_of_a_cnn_take_bn_relu_pool_and_open_containers():
    body = SmallCNN()
    names = [name for name, _ in block_outputs(body, body.classifier)]
    # conv block ends at its max-pool; the residual block is one unit that absorbs pool and flatten
    assert names == ["features_.3", "flat"]


def test_taps_match_manual_forward():
    torch.manual_seed(0)
    net = Network(SmallCNN(), (0.5,), (0.25,)).eval()
    x = torch.rand(6, 1, 8, 8)
    taps = FeatureTaps(net, "all", "avg")
    logits, feats = taps(x)
    assert taps.names == ["00_features_.3", "01_flat", PENULTIMATE]
    z = net.normalize(x)
    first = net.body.features_[:4](z)
    assert torch.allclose(feats["00_features_.3"], first.mean((2, 3)), atol=1e-6)
    assert torch.allclose(feats[PENULTIMATE], net.features(x), atol=1e-6)
    assert torch.allclose(logits, net(x))
    flat_taps = FeatureTaps(net, "all", "flatten")
    _, flat = flat_taps(x)
    assert torch.allclose(flat["00_features_.3"], first.flatten(1), atol=1e-6)
    assert not net.body.features_[0]._forward_hooks  # hooks are removed after the pass


def test_streaming_over_taps_is_independent_of_batch_size():
    torch.manual_seed(1)
    net = Network(mlp(), (0.5,), (0.25,)).eval().double()  # float64: batch-size effects of fp32 matmuls vanish
    x = torch.rand(40, 1, 4, 4, dtype=torch.float64)
    y = torch.arange(40) % 3
    taps = FeatureTaps(net, "all")
    results = []
    for bs in (3, 40):
        means = class_means(taps, x, y, 3, bs, torch.device("cpu"))
        scat, acc = scatter(taps, means, x, y, bs, torch.device("cpu"))
        results.append((means, scat, acc))
    (m1, s1, a1), (m2, s2, a2) = results
    assert a1 == a2
    for name in taps.names:
        assert torch.allclose(m1[name].means(), m2[name].means(), atol=1e-12)
        assert abs(s1[name].projected_sq - s2[name].projected_sq) <= 1e-9 * abs(s2[name].projected_sq)
        assert s1[name].ncc_agree == s2[name].ncc_agree
    # the penultimate means are those of Network.features
    ref = MeanAccumulator(3)
    ref.update(net.features(x), y)
    assert torch.allclose(m1[PENULTIMATE].means(), ref.means(), atol=1e-12)
