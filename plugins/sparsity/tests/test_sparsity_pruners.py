"""Pruners against brute-force definitions of their scores, and their mask invariants."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from deepscope_sparsity import pruners as P
from deepscope_sparsity import scores as S
from deepscope_sparsity.configs import (GraspPrunerConfig, IterativeSnipPrunerConfig, LampPrunerConfig,
                                        MagnitudePrunerConfig, RandomPrunerConfig, SnipPrunerConfig,
                                        SynflowPrunerConfig)
from deepscope_sparsity.effective import EffectiveMasks, sparsity_report
from deepscope_sparsity.masking import global_top, iterative_ranking
from deepscope_sparsity.quotas import layer_counts
from sparsity_fakes import ResidualNet, make_state, mlp

SHAPE = (1, 4, 4)


def lenet_like(seed=0):
    return make_state(mlp([16, 40, 20, 3], seed=seed), SHAPE, seed=seed)


def kept(masks):
    return sum(int(m.sum()) for m in masks.values())


GLOBAL_PRUNERS = [
    (P.MagnitudePruner, MagnitudePrunerConfig),
    (P.LampPruner, LampPrunerConfig),
    (P.SnipPruner, lambda **kw: SnipPrunerConfig(samples=32, batch_size=16, **kw)),
    (P.GraspPruner, lambda **kw: GraspPrunerConfig(samples=32, batch_size=16, **kw)),
    (P.SynflowPruner, lambda **kw: SynflowPrunerConfig(iterations=10, **kw)),
    (P.IterativeSnipPruner, lambda **kw: IterativeSnipPrunerConfig(iterations=5, batch_size=16, **kw)),
]


@pytest.mark.parametrize("pruner_cls, config", GLOBAL_PRUNERS)
def test_global_pruners_keep_exactly_the_budget_and_never_regrow(pruner_cls, config):
    state = lenet_like()
    first = P.MagnitudePruner(MagnitudePrunerConfig(compression=2)).prune(state, None, 0.5)
    state.set_masks(first)
    masks = pruner_cls(config(compression=10)).prune(state, None, 0.1)
    total = sum(p.numel() for p in state.prunable().values())
    assert kept(masks) == round(0.1 * total)
    assert all(not (masks[n] & ~first[n]).any() for n in masks)


@pytest.mark.parametrize("quota", ["uniform", "uniform-plus", "erk", "igq"])
@pytest.mark.parametrize("pruner_cls, config", [(P.RandomPruner, RandomPrunerConfig),
                                                 (P.MagnitudePruner, MagnitudePrunerConfig)])
def test_quota_pruners_follow_the_layer_counts(pruner_cls, config, quota):
    state = lenet_like()
    masks = pruner_cls(config(compression=2, quota=quota)).prune(state, None, 0.5)
    shapes = [tuple(p.shape) for p in state.prunable().values()]
    assert [int(m.sum()) for m in masks.values()] == layer_counts(quota, shapes, 0.5)


def test_random_masks_are_nested_in_the_density():
    state = lenet_like()
    pruner = P.RandomPruner(RandomPrunerConfig(compression=2, quota="igq"))
    previous = None
    for density in (0.01, 0.03, 0.1, 0.3, 0.7):
        masks = pruner.prune(state, None, density)
        if previous is not None:
            assert all(not (previous[n] & ~masks[n]).any() for n in masks)
        previous = masks


def test_random_pruning_depends_on_the_seed_only():
    a = P.RandomPruner(RandomPrunerConfig(compression=4, seed=1)).prune(lenet_like(0), None, 0.25)
    b = P.RandomPruner(RandomPrunerConfig(compression=4, seed=1)).prune(lenet_like(5), None, 0.25)
    c = P.RandomPruner(RandomPrunerConfig(compression=4, seed=2)).prune(lenet_like(0), None, 0.25)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)


def test_global_magnitude_keeps_the_largest_weights():
    state = lenet_like()
    masks = P.MagnitudePruner(MagnitudePrunerConfig(compression=10)).prune(state, None, 0.1)
    params = state.prunable()
    kept_min = torch.cat([params[n].detach().abs()[m] for n, m in masks.items()]).min()
    pruned_max = torch.cat([params[n].detach().abs()[~m] for n, m in masks.items()]).max()
    assert kept_min >= pruned_max


def test_lamp_scores_match_the_definition():
    state = make_state(mlp([3, 4, 2]), (3,))
    for name, score in S.lamp_scores(state).items():
        w = state.prunable()[name].detach().double().flatten()
        for u in range(w.numel()):
            tail = (w[w.abs() >= w[u].abs()] ** 2).sum()
            assert score.flatten()[u] == pytest.approx(float(w[u] ** 2 / (tail + 1e-8)), rel=1e-9)


def test_snip_scores_are_the_mask_gradient():
    state = lenet_like()
    got = S.snip_scores(state, samples=32, batch_size=32, seed=0)
    x, y = next(S.sample_batches(state, 32, 32, 0))
    model = state.model.eval()
    params = state.prunable()
    gates = {n: torch.ones_like(p, requires_grad=True) for n, p in params.items()}
    weights = {n: p.detach() * gates[n] for n, p in params.items()}
    logits = torch.func.functional_call(model, weights, (x,))
    grads = torch.autograd.grad(F.cross_entropy(logits, y), list(gates.values()))
    for (name, _), g in zip(params.items(), grads):
        assert torch.allclose(got[name], g.abs(), atol=1e-7)


def test_grasp_scores_are_weight_times_hessian_gradient_product():
    state = make_state(mlp([4, 3, 2], seed=1), (4,), classes=2)
    got = S.grasp_scores(state, samples=16, batch_size=16, seed=0, temperature=2.0)
    x, y = next(S.sample_batches(state, 16, 16, 0))
    params = state.prunable()
    names = list(params)
    sizes = [params[n].numel() for n in names]
    flat0 = torch.cat([params[n].detach().flatten() for n in names]).double()
    model = state.model.double().eval()

    def loss(flat):
        parts = torch.split(flat, sizes)
        weights = {n: part.view(params[n].shape) for n, part in zip(names, parts)}
        return F.cross_entropy(torch.func.functional_call(model, weights, (x.double(),)) / 2.0, y)

    g = torch.autograd.functional.jacobian(loss, flat0)
    h = torch.autograd.functional.hessian(loss, flat0)
    expected = torch.split(flat0 * (h @ g), sizes)
    for name, e in zip(names, expected):
        assert torch.allclose(got[name].double().flatten(), e, rtol=1e-4, atol=1e-9)


def test_synflow_scores_match_the_closed_form_of_a_two_layer_net():
    body = nn.Sequential(nn.Flatten(), nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    state = make_state(body, (3,))
    w1 = body[1].weight.detach().double().abs()
    w2 = body[3].weight.detach().double().abs()
    mask = {n: torch.ones_like(p, dtype=torch.bool) for n, p in state.prunable().items()}
    got = S.SynFlowScorer(state)(mask)
    # R = 1^T |W2| |W1| 1: score(w1_ij) = |w1_ij| sum_k |w2_ki|; score(w2_ki) = |w2_ki| sum_j |w1_ij|
    assert torch.allclose(got["body.1.weight"], w1 * w2.sum(0)[:, None])
    assert torch.allclose(got["body.3.weight"], w2 * w1.sum(1)[None, :])


def test_synflow_leaves_effective_sparsity_close_to_direct():
    state = make_state(mlp([64, 100, 60, 10], seed=2), (1, 8, 8))
    masks = P.SynflowPruner(SynflowPrunerConfig(compression=100)).prune(state, None, 0.01)
    report = sparsity_report(masks, EffectiveMasks(state.model, (1, 8, 8))(masks))
    assert report["effective_compression"] <= 1.05 * report["direct_compression"]
    random = P.RandomPruner(RandomPrunerConfig(compression=100)).prune(state, None, 0.01)
    rreport = sparsity_report(random, EffectiveMasks(state.model, (1, 8, 8))(random))
    assert rreport["effective_compression"] > 1.5 * rreport["direct_compression"]


def test_iterative_ranking_replays_every_pruning_step():
    torch.manual_seed(0)
    base = {"a": torch.rand(5, 7), "b": torch.rand(11)}
    alive = {n: torch.ones_like(v, dtype=torch.bool) for n, v in base.items()}
    history = []

    def score_fn(mask):  # scores change with the mask, as SynFlow's do
        history.append({n: m.clone() for n, m in mask.items()})
        live = sum(int(m.sum()) for m in mask.values())
        return {n: v * (1 + live * (v > 0.5)) for n, v in base.items()}

    keys = iterative_ranking(score_fn, alive, 0.1, 6)
    total = 46
    for t, mask in enumerate(history[1:], start=1):  # history[t] is the mask after step t
        k = round(0.1 ** (t / 6) * total)
        replay = global_top(keys, k)
        assert all(torch.equal(replay[n], mask[n]) for n in mask)


def test_magnitude_rewind_resets_survivors_to_their_initial_values():
    state = lenet_like()
    init = {n: p.detach().clone() for n, p in state.prunable().items()}
    with torch.no_grad():
        for p in state.model.parameters():
            p.add_(torch.randn_like(p))
    masks = P.MagnitudePruner(MagnitudePrunerConfig(compression=4, rewind=True)).prune(state, None, 0.25)
    state.set_masks(masks)
    for name, p in state.prunable().items():
        assert torch.equal(p.detach(), init[name] * masks[name])


def test_pruners_handle_residual_conv_nets():
    state = make_state(ResidualNet(), (3, 4, 4))
    total = sum(p.numel() for p in state.prunable().values())
    for pruner in (P.SynflowPruner(SynflowPrunerConfig(compression=10, iterations=5)),
                   P.SnipPruner(SnipPrunerConfig(compression=10, samples=16, batch_size=16))):
        assert kept(pruner.prune(state, None, 0.1)) == round(0.1 * total)
    assert math.isfinite(total)


def test_linear_time_selection_matches_a_stable_sort():
    g = torch.Generator().manual_seed(0)
    for trial in range(30):
        n = int(torch.randint(1, 60, (1,), generator=g))
        values = torch.randint(0, 5, (n,), generator=g).double()  # many ties
        values[torch.rand(n, generator=g) < 0.2] = -torch.inf  # pruned weights
        k = int(torch.randint(0, n + 2, (1,), generator=g))
        order = torch.argsort(values, descending=True, stable=True)[:k]
        want = torch.zeros(n, dtype=torch.bool)
        want[order] = True
        want &= torch.isfinite(values)
        got = global_top({"a": values[: n // 2], "b": values[n // 2:]}, k)
        assert torch.equal(torch.cat([got["a"], got["b"]]), want), trial


def test_float32_synflow_scoring_gives_the_float64_masks_up_to_rounding_ties():
    state = lenet_like(3)
    masks = {dtype: P.SynflowPruner(SynflowPrunerConfig(compression=20, iterations=20, dtype=dtype))
             .prune(state, None, 0.05) for dtype in ("float64", "float32")}
    kept_64 = kept(masks["float64"])
    assert kept(masks["float32"]) == kept_64
    differ = sum(int((masks["float64"][n] ^ masks["float32"][n]).sum()) for n in masks["float64"])
    assert differ <= 0.02 * kept_64
    scorer = S.SynFlowScorer(state, torch.float32)
    assert all(p.dtype == torch.float32 for p in scorer.linear.params.values())


def test_flat_synflow_scorer_ranks_exactly_as_the_per_layer_scores():
    """The flat, prune-in-place SynFlow path gives the per-layer path's keys bit for bit, from a
    partly pruned start (its initial mask is respected)."""
    state = lenet_like(4)
    g = torch.Generator().manual_seed(1)
    alive = {n: torch.rand(p.shape, generator=g) < 0.7 for n, p in state.prunable().items()}
    for dtype in (torch.float64, torch.float32):
        flat = iterative_ranking(S.SynFlowScorer(state, dtype), alive, 0.05, 7)
        per_layer = S.SynFlowScorer(state, dtype)
        reference = iterative_ranking(lambda mask: per_layer(mask), alive, 0.05, 7)
        assert all(torch.equal(flat[n], reference[n]) for n in flat)
        assert all(torch.isneginf(flat[n][~alive[n]]).all() for n in flat)  # pruned before: never ranked
