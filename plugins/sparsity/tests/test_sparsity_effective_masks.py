"""Effective masks: the linearized method against a graph oracle, hand-built cases and invariants."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from deepscope_sparsity.effective import EffectiveMasks, effective_masks, sparsity_report
from deepscope_sparsity.graph_oracle import mlp_effective_masks
from deepscope_sparsity.linearize import linear_stand_in
from sparsity_fakes import ResidualNet, make_state, mlp


def random_masks(model, density, seed):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) < density for n, p in model.named_parameters()
            if n.endswith("weight") and p.dim() > 1}


@settings(max_examples=25, deadline=None)
@given(widths=st.lists(st.integers(1, 9), min_size=2, max_size=6), density=st.floats(0.05, 0.9),
       seed=st.integers(0, 10_000), bn=st.booleans())
def test_linearized_method_agrees_exactly_with_graph_reachability_on_mlps(widths, density, seed, bn):
    body = mlp(widths, bn=bn, seed=seed)
    masks = random_masks(body, density, seed)
    names = list(masks)
    got = effective_masks(body, masks, (widths[0],))
    want = mlp_effective_masks([masks[n] for n in names])
    for name, expected in zip(names, want):
        assert torch.equal(got[name], expected), name


def test_very_deep_mlp_neither_overflows_nor_underflows():
    # 400 layers of width 10 at density 0.8: path counts reach ~8^400 = 1e361 per unit, and the
    # gradient products far beyond float64's range, which the per-layer 0/1 resets must absorb
    from deepscope_sparsity.linearize import LinearizedNetwork

    body = mlp([10] * 401, seed=0)
    masks = random_masks(body, 0.8, 1)
    names = list(masks)
    got = effective_masks(body, masks, (10,))
    want = mlp_effective_masks([masks[n] for n in names])
    assert all(torch.equal(got[n], w) for n, w in zip(names, want))
    assert sum(int(w.sum()) for w in want) > 0  # a live network, not a trivially dead one
    naive = LinearizedNetwork(body, (10,)).gradients({n: m.double() for n, m in masks.items()}, binarize=False)
    assert not all(torch.isfinite(g).all() for g in naive.values())  # the pitfall is real here


def test_effective_mask_is_a_subset_and_idempotent_on_a_residual_conv_net():
    state = make_state(ResidualNet(), (3, 4, 4))
    masks = random_masks(state.model, 0.15, 3)
    computer = EffectiveMasks(state.model, (3, 4, 4))
    once = computer(masks)
    twice = computer(once)
    for name in masks:
        assert not (once[name] & ~masks[name]).any()
        assert torch.equal(once[name], twice[name])


def test_unit_without_outgoing_weights_kills_its_incoming_weights():
    body = mlp([2, 3, 1])
    masks = {"1.weight": torch.ones(3, 2, dtype=torch.bool), "3.weight": torch.tensor([[True, False, True]])}
    got = effective_masks(body, masks, (2,))
    assert torch.equal(got["1.weight"], torch.tensor([[True, True], [False, False], [True, True]]))
    assert torch.equal(got["3.weight"], masks["3.weight"])


def test_unit_without_incoming_weights_kills_its_outgoing_weights():
    body = mlp([2, 3, 2])
    first = torch.ones(3, 2, dtype=torch.bool)
    first[1] = False
    masks = {"1.weight": first, "3.weight": torch.ones(2, 3, dtype=torch.bool)}
    got = effective_masks(body, masks, (2,))
    assert not got["3.weight"][:, 1].any() and got["3.weight"][:, [0, 2]].all()


def test_pruned_residual_branch_keeps_the_identity_path_alive():
    state = make_state(ResidualNet(), (3, 4, 4))
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in state.prunable().items()}
    masks["body.conv2.weight"][:] = False
    got = EffectiveMasks(state.model, (3, 4, 4))(masks)
    assert got["body.stem.weight"].all() and got["body.head.weight"].all()
    assert not got["body.conv1.weight"].any()  # its only way out was conv2


def test_padded_3x3_conv_on_a_1x1_map_keeps_only_the_centre_tap():
    body = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3, 2))
    masks = {"0.weight": torch.ones(3, 2, 3, 3, dtype=torch.bool), "3.weight": torch.ones(2, 3, dtype=torch.bool)}
    got = effective_masks(body, masks, (2, 1, 1))
    centre = torch.zeros(3, 3, dtype=torch.bool)
    centre[1, 1] = True
    assert torch.equal(got["0.weight"], centre.expand(3, 2, 3, 3))
    assert got["3.weight"].all()


def test_fully_disconnected_network_reports_sparsity_one_and_infinite_compression():
    body = mlp([4, 5, 3])
    masks = {"1.weight": torch.ones(5, 4, dtype=torch.bool), "3.weight": torch.zeros(3, 5, dtype=torch.bool)}
    report = sparsity_report(masks, effective_masks(body, masks, (4,)))
    assert report["effective_sparsity"] == 1.0
    assert math.isinf(report["effective_compression"])
    assert report["direct_sparsity"] == pytest.approx(15 / 35)
    assert report["effective_sparsity/1.weight"] == 1.0 and report["direct_sparsity/1.weight"] == 0.0


def test_max_pool_becomes_average_pool_and_norms_activations_vanish():
    stand_in = linear_stand_in(nn.MaxPool2d(2, stride=2, padding=1))
    assert isinstance(stand_in, nn.AvgPool2d) and stand_in.kernel_size == 2 and stand_in.padding == 1
    for module in (nn.ReLU(), nn.GELU(), nn.BatchNorm2d(3), nn.LayerNorm(4), nn.Dropout(0.5), nn.Softmax(1)):
        assert isinstance(linear_stand_in(module), nn.Identity)
    assert linear_stand_in(nn.Conv2d(1, 1, 3)) is None


def test_the_model_itself_is_left_untouched():
    state = make_state(ResidualNet(), (3, 4, 4))
    before = {k: v.clone() for k, v in state.model.state_dict().items()}
    EffectiveMasks(state.model, (3, 4, 4))(random_masks(state.model, 0.3, 0))
    after = state.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert after["body.stem.weight"].dtype == torch.float32


@pytest.mark.gpu
def test_cuda_effective_masks_and_synflow_match_cpu():
    from deepscope_sparsity import pruners as P
    from deepscope_sparsity.configs import SynflowPrunerConfig

    cpu = make_state(ResidualNet(), (3, 4, 4))
    masks = random_masks(cpu.model, 0.2, 4)
    want = EffectiveMasks(cpu.model, (3, 4, 4))(masks)
    want_syn = P.SynflowPruner(SynflowPrunerConfig(compression=10, iterations=5)).prune(cpu, None, 0.1)
    gpu = make_state(ResidualNet(), (3, 4, 4))
    gpu.model.load_state_dict(cpu.model.state_dict())
    gpu.model.cuda()
    gpu.device = torch.device("cuda")
    got = EffectiveMasks(gpu.model, (3, 4, 4))({n: m.cuda() for n, m in masks.items()})
    got_syn = P.SynflowPruner(SynflowPrunerConfig(compression=10, iterations=5)).prune(gpu, None, 0.1)
    assert all(torch.equal(got[n].cpu(), want[n]) for n in want)
    assert all(torch.equal(got_syn[n].cpu(), want_syn[n]) for n in want_syn)


class FixedFilterNet(nn.Module):
    """A fixed, signed filter bank (a buffer) and a functional ReLU before a prunable layer."""

    def __init__(self):
        super().__init__()
        self.register_buffer("bank", torch.tensor([[[[1.0, -1.0]]], [[[-1.0, 1.0]]]]))  # sums to zero
        self.fc = nn.Linear(2 * 2 * 2, 3)

    def forward(self, x):
        return self.fc(torch.relu(nn.functional.conv2d(x, self.bank)).flatten(1))


def test_signed_fixed_buffers_do_not_cut_paths_of_a_dense_network():
    masks = {"fc.weight": torch.ones(3, 8, dtype=torch.bool)}
    got = effective_masks(FixedFilterNet(), masks, (1, 2, 3))
    assert got["fc.weight"].all()  # with the buffer's signs kept, x*1 - x*1 = 0 would kill everything
