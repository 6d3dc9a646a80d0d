"""adv-ntk-cnn: the official CNN_mega's shape, parameter count and initialization scale."""

from __future__ import annotations

import math

import pytest
import torch

from deepscope import DatasetInfo
from deepscope_ntk.cnn import make_adv_ntk_cnn


def test_cifar_shape_and_parameter_count_match_the_flax_definition():
    info = DatasetInfo("cifar", 10, (3, 32, 32), mean=(0.5,) * 3, std=(0.25,) * 3)
    net = make_adv_ntk_cnn(None, info)
    # by hand from robust_train_CNN.py: 3x3 convs 3-32-32 | 32-64-64-128-128, then Dense(8 * 8 * 128 -> 10)
    convs = [(3, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128)]
    expected = sum(9 * i * o + o for i, o in convs) + 8 * 8 * 128 * 10 + 10
    assert expected == 368938
    assert sum(p.numel() for p in net.parameters()) == expected
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    fmnist = make_adv_ntk_cnn(None, DatasetInfo("f", 10, (1, 28, 28), mean=(0.5,), std=(0.25,)))
    assert fmnist(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_weights_have_lecun_scale_and_zero_biases():
    torch.manual_seed(0)
    net = make_adv_ntk_cnn(None, DatasetInfo("cifar", 10, (3, 32, 32), mean=(0.5,) * 3, std=(0.25,) * 3))
    conv = net.features[11]  # the last 128 -> 128 convolution: 147,456 weights
    assert conv.weight.shape == (128, 128, 3, 3)
    assert conv.weight.std().item() == pytest.approx(1 / math.sqrt(128 * 9), rel=0.02)
    assert conv.weight.abs().max().item() <= 2 * (1 / math.sqrt(128 * 9)) / 0.87962566103423978 + 1e-7
    assert all((m.bias == 0).all() for m in net.modules() if hasattr(m, "bias") and m.bias is not None)

