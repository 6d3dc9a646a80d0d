"""Supermask layers against independent oracles: magnitudes, kept counts, straight-through, alpha combinations."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from deepscope_impressions.configs import SupermaskLeNetConfig, SupermaskMLPConfig
from deepscope_impressions.supermask import (MaskedConv2d, MaskedLinear, binary_mask, make_lenet, make_mlp,
                                             straight_through_mask)

INFO = SimpleNamespace(num_tasks=4, num_inputs=36, num_classes=5, channels=1, height=6, width=6)


def mlp(**kw):
    torch.manual_seed(0)
    return make_mlp(SupermaskMLPConfig(widths=[16, 12], **kw), INFO)


def test_signed_constant_weights_all_have_magnitude_gain_over_sqrt_fan_in():
    torch.manual_seed(1)
    linear = MaskedLinear(50, 7, 2, 2, 0.5, "topk-abs", gain=math.sqrt(2))
    conv = MaskedConv2d(3, 4, 5, 2, 2, 0.5, "topk-abs", gain=1.5)
    assert torch.allclose(linear.weight.abs(), torch.full_like(linear.weight, math.sqrt(2) / math.sqrt(50)), rtol=0,
                          atol=1e-7)
    assert torch.allclose(conv.weight.abs(), torch.full_like(conv.weight, 1.5 / math.sqrt(3 * 25)), rtol=0, atol=1e-7)
    assert 0.4 < float((linear.weight > 0).float().mean()) < 0.6  # random signs
    assert not linear.weight.requires_grad


@pytest.mark.parametrize("numel,density", [(100, 0.5), (37, 0.3), (1000, 0.05), (12, 1.0), (7, 0.01)])
def test_topk_keeps_numel_minus_floor_of_the_pruned_fraction_and_the_largest_scores(numel, density):
    scores = torch.randn(numel, generator=torch.Generator().manual_seed(numel))
    expected = numel - math.floor((1 - density) * numel)
    for selection, ranked in (("topk-abs", scores.abs()), ("topk", scores)):
        mask = binary_mask(scores, density, selection)
        assert int(mask.sum()) == expected
        order = torch.argsort(ranked, descending=True)  # brute force: the `expected` largest values are kept
        assert torch.equal(mask[order[:expected]], torch.ones(expected))
    assert torch.equal(binary_mask(scores, density, "threshold"), (scores >= 0).float())


@pytest.mark.parametrize("selection", ["topk", "threshold", "topk-abs"])
def test_the_straight_through_gradient_is_the_identity_on_the_ranked_values(selection):
    scores = torch.randn(5, 6, requires_grad=True)
    upstream = torch.randn(5, 6)
    (straight_through_mask(scores, 0.4, selection) * upstream).sum().backward()
    # identity with respect to what is ranked: scores, or |scores| for topk-abs (d|s|/ds = sign s)
    expected = upstream * scores.detach().sign() if selection == "topk-abs" else upstream
    assert torch.equal(scores.grad, expected)


def test_alpha_one_hot_on_a_basis_mask_equals_that_supsup_mask_exactly():
    body = mlp()
    x = torch.randn(9, 1, 6, 6)
    with torch.no_grad():
        body.set_task(1)
        own = body(x)
        body.use_basis(3, [0, 1, 2], torch.tensor([0.0, 1.0, 0.0]))
        body.set_task(3)
        assert torch.equal(body(x), own)
        body.use_basis(3, [1])  # uniform alpha over one mask: 1/1
        assert torch.equal(body(x), own)
        body.use_basis(3, [0, 2])  # uniform over two: W * (M0 + M2) / 2
        for layer in body.masked_layers():
            assert torch.equal(layer.task_mask(3), 0.5 * layer.mask(0) + 0.5 * layer.mask(2))


def test_superposed_one_hot_coefficients_equal_the_task_and_masks_stay_out_of_pruning():
    body = mlp()
    x = torch.randn(4, 1, 6, 6)
    with torch.no_grad():
        body.set_task(2)
        own = body(x)
        body.superpose(torch.tensor([0.0, 0.0, 1.0, 0.0]))
        assert torch.equal(body(x), own)
        body.superpose(None)
    assert body.prunable_parameters() == {}


def test_per_task_batchnorm_keeps_each_tasks_statistics_apart():
    torch.manual_seed(0)
    body = make_lenet(SupermaskLeNetConfig(channels=[3], widths=[8]), INFO)
    x = torch.randn(8, 1, 6, 6)
    body.train()
    body.set_task(0)
    body(x)
    before = [n.running_mean.clone() for n in body.norms[0].norms]
    body.set_task(1)
    body(3 * x + 1)
    after = [n.running_mean for n in body.norms[0].norms]
    assert torch.equal(after[0], before[0]) and not torch.equal(after[1], before[1])
    assert not any(p.requires_grad for n in body.norms for p in n.parameters())  # non-affine


def test_the_mask_cache_follows_in_place_updates_of_the_scores():
    layer = MaskedLinear(10, 4, 1, 1, 0.5, "topk", gain=1.0)
    first = layer.mask(0).clone()
    with torch.no_grad():
        layer.scores[0].neg_()
        again = layer.mask(0)
    assert not torch.equal(first, again) and torch.equal(again, binary_mask(layer.scores[0].detach(), 0.5, "topk"))


def test_the_supermask_resnet_is_task_aware_with_frozen_weights_and_per_task_norms():
    from deepscope_impressions.configs import SupermaskResNetConfig
    from deepscope_impressions.supermask import make_resnet

    torch.manual_seed(0)
    info = SimpleNamespace(num_tasks=2, num_inputs=3 * 8 * 8, num_classes=5, channels=3, height=8, width=8)
    body = make_resnet(SupermaskResNetConfig(width=4, blocks=[1, 1]), info)
    x = torch.randn(2, 3, 8, 8)
    body.eval()
    with torch.no_grad():
        body.set_task(0)
        a = body(x)
        body.set_task(1)
        b = body(x)
    assert a.shape == (2, 5) and not torch.equal(a, b)  # each task its own masks
    assert all(not layer.weight.requires_grad for layer in body.masked_layers())
    assert len(body.masked_layers()) == 1 + 2 + (2 + 1) + 1  # stem, block 1, block 2 with shortcut, classifier
    assert body.prunable_parameters() == {}
