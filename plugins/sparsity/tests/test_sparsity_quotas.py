"""Layerwise quotas against closed forms and hand-computed cases."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepscope_sparsity.quotas import erk, igq, igq_force, layer_counts, layer_densities, uniform_plus


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 300_000), min_size=1, max_size=12), log_comp=st.floats(0.0, 3.5))
def test_igq_hits_the_target_within_one_weight_and_never_empties_a_layer(sizes, log_comp):
    density = 10.0 ** -log_comp
    total = sum(sizes)
    densities = igq(sizes, density)
    assert all(0.0 < d <= 1.0 for d in densities)
    assert abs(sum(d * n for d, n in zip(densities, sizes)) / total - density) < 1.0 / total
    counts = layer_counts("igq", [(n,) for n in sizes], density)
    assert all(1 <= k <= n for k, n in zip(counts, sizes))


def test_igq_is_the_ideal_gas_law():
    sizes = [784 * 300, 300 * 100, 100 * 10]
    densities = igq(sizes, 0.01)
    force = igq_force(sizes, 0.01)
    # density_l = 1 / (1 + F n_l)  <=>  (1/density_l - 1) / n_l = F for every layer
    for d, n in zip(densities, sizes):
        assert (1.0 / d - 1.0) / n == pytest.approx(force, rel=1e-9)
    assert densities[0] < densities[1] < densities[2]


def test_erk_without_redistribution_is_proportional_to_sum_over_product():
    shapes = [(300, 784), (100, 300), (10, 100)]
    density = 0.05
    dens = erk(shapes, density)
    raw = [sum(s) / math.prod(s) for s in shapes]
    assert dens[0] / raw[0] == pytest.approx(dens[1] / raw[1]) == pytest.approx(dens[2] / raw[2])
    sizes = [math.prod(s) for s in shapes]
    assert sum(d * n for d, n in zip(dens, sizes)) == pytest.approx(density * sum(sizes))


def test_erk_passes_negative_sparsity_back_to_the_previous_layer():
    shapes = [(100, 100), (2, 2)]  # c = 0.02 and 1.0
    # k = 0.5 * 10004 / (10000 * 0.02 + 4 * 1.0) = 5002 / 204
    k = 0.5 * 10004 / 204
    s_last = 1 - k  # negative: would be denser than dense
    s_first = 1 - 0.02 * k
    merged = (10000 * s_first + 4 * s_last) / 10000
    dens = erk(shapes, 0.5)
    assert dens[1] == 1.0
    assert dens[0] == pytest.approx(1 - merged)
    assert dens[0] * 10000 + 4 == pytest.approx(0.5 * 10004)


def test_uniform_plus_hand_computed():
    sizes = [100, 1000, 1000, 10]
    density = 0.1
    total = sum(sizes)
    rest = 0.9 * total / 2010
    excess = (rest - 0.8) * 10
    expected = [1.0, 1 - (rest + excess / 2000), 1 - (rest + excess / 2000), 0.2]
    assert uniform_plus(sizes, density) == pytest.approx(expected)
    assert sum(d * n for d, n in zip(uniform_plus(sizes, density), sizes)) == pytest.approx(density * total)


def test_uniform_plus_refuses_unreachable_targets():
    from deepscope import ConfigError

    with pytest.raises(ConfigError) as info:
        uniform_plus([1000, 10], 0.001)
    assert str(info.value).startswith("quota: quota 'uniform-plus' keeps the first layer dense")


def test_layer_densities_rejects_unknown_quotas():
    with pytest.raises(ValueError, match="'quota'"):
        layer_densities("nope", [(3, 3)], 0.5)


VGG16_CIFAR = [(64, 3, 3, 3), (64, 64, 3, 3), (128, 64, 3, 3), (128, 128, 3, 3), (256, 128, 3, 3),
               (256, 256, 3, 3), (256, 256, 3, 3), (512, 256, 3, 3), (512, 512, 3, 3), (512, 512, 3, 3),
               (512, 512, 3, 3), (512, 512, 3, 3), (512, 512, 3, 3), (10, 512)]


@pytest.mark.parametrize("density", [0.5, 0.2, 0.1, 0.01, 0.001])
def test_erk_keeps_the_overall_density_exactly_on_vgg16(density):
    sizes = [math.prod(s) for s in VGG16_CIFAR]
    densities = erk(VGG16_CIFAR, density)
    assert all(0.0 < d <= 1.0 for d in densities)
    assert sum(d * n for d, n in zip(densities, sizes)) == pytest.approx(density * sum(sizes), rel=1e-12)
