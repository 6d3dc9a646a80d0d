"""The Circles dataset: labels by radius, class shares equal to the areas of the rings, raw coordinates."""

from __future__ import annotations

import math

import torch

from deepscope import Network
from deepscope_goldilocks.circles import BOUNDARIES, RADIUS, build_circles
from deepscope_goldilocks.configs import CirclesConfig, circles_shape


def raw(bundle, split="train"):
    x, y = bundle.tensors(split)
    normalize = Network(torch.nn.Identity(), bundle.info.mean, bundle.info.std).normalize
    return normalize(x).view(-1, 2).double(), y


def test_points_fill_the_disk_and_labels_follow_the_radius_outside_the_mixed_bands():
    bundle = build_circles(CirclesConfig(n_train=20000, n_test=10, band=0.05))
    xy, y = raw(bundle)
    assert bundle.tensors("train")[0].min() >= 0 and bundle.tensors("train")[0].max() <= 1
    r = xy.norm(dim=1)
    assert r.max() <= RADIUS + 1e-6
    inner, middle = BOUNDARIES
    assert set(y[r < inner - 0.05].tolist()) == {0} and set(y[(r >= inner) & (r < middle - 0.05)].tolist()) == {1}
    assert set(y[r >= middle].tolist()) == {2}
    assert set(y[(r >= inner - 0.05) & (r < inner)].tolist()) == {0, 1}
    # uniform in the disk: P(r < a) = a^2 / R^2; half of each mixed band goes to the outer label
    def area(a, b):
        return (b * b - a * a) / RADIUS ** 2

    expected = [area(0, inner - 0.05) + area(inner - 0.05, inner) / 2,
                area(inner - 0.05, inner) / 2 + area(inner, middle - 0.05) + area(middle - 0.05, middle) / 2,
                area(middle - 0.05, middle) / 2 + area(middle, RADIUS)]
    shares = torch.bincount(y, minlength=3).double() / len(y)
    n = len(y)
    for share, p in zip(shares.tolist(), expected):
        assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / n)
    angle = torch.atan2(xy[:, 1], xy[:, 0])
    assert abs(angle.mean().item()) < 4 * (math.pi / math.sqrt(3)) / math.sqrt(n)  # uniform on (-pi, pi]


def test_the_data_depend_on_the_dataset_seed_only_and_the_shape_is_declared():
    a = build_circles(CirclesConfig(n_train=50, n_test=20, seed=3))
    b = build_circles(CirclesConfig(n_train=50, n_test=20, seed=3))
    c = build_circles(CirclesConfig(n_train=50, n_test=20, seed=4))
    assert torch.equal(a.tensors("train")[0], b.tensors("train")[0])
    assert not torch.equal(a.tensors("train")[0], c.tensors("train")[0])
    shape = circles_shape(CirclesConfig())
    assert shape.input_shape == a.info.input_shape == (1, 1, 2) and shape.num_classes == a.info.num_classes == 3
    assert len(a.test) == 20
