"""The ``effective`` prune target: the smallest direct pruning meeting an effective sparsity."""

from __future__ import annotations

import math

import pytest
import torch

from deepscope_sparsity import pruners as P
from deepscope_sparsity.configs import MagnitudePrunerConfig, RandomPrunerConfig, SynflowPrunerConfig
from deepscope_sparsity.effective import EffectiveMasks, count_kept
from deepscope_sparsity.effective_target import prune_effective
from deepscope import ConfigError
from sparsity_fakes import make_state, mlp

SHAPE = (1, 6, 6)


class RecordingContext:
    prefix = "prune/test"

    def __init__(self):
        self.metrics = {}

    def log_metrics(self, metrics, step=None):
        self.metrics.update(metrics)

    def progress(self, iterable, total=None, description=""):
        return iterable


class ThirdPartyMagnitude:
    """A pruner written elsewhere: no caching, no ranking API, just prune()."""

    def __init__(self):
        self.calls = 0

    def prune(self, state, ctx, density):
        self.calls += 1
        params = state.prunable()
        flat = torch.cat([p.detach().abs().flatten() for p in params.values()])
        k = round(density * flat.numel())
        keep = torch.zeros_like(flat, dtype=torch.bool)
        keep[torch.argsort(flat, descending=True, stable=True)[:k]] = True
        out, start = {}, 0
        for n, p in params.items():
            out[n] = keep[start:start + p.numel()].view(p.shape)
            start += p.numel()
        return out


def lenet_like():
    return make_state(mlp([36, 60, 30, 4], seed=3), SHAPE, classes=4, seed=3)


def test_effective_target_meets_the_request_with_the_smallest_direct_budget():
    state = lenet_like()
    total = sum(p.numel() for p in state.prunable().values())
    density = 0.01
    wanted = math.ceil(density * total)
    ctx = RecordingContext()
    pruner = P.MagnitudePruner(MagnitudePrunerConfig(compression=100))
    masks = prune_effective(pruner, state, ctx, density)
    effective = EffectiveMasks(state.model, SHAPE)
    assert count_kept(effective(masks)) >= wanted
    direct = count_kept(masks)
    assert direct > wanted  # magnitude disconnects units at this compression
    one_less = pruner.prune(state, None, (direct - 1) / total)
    assert count_kept(effective(one_less)) < wanted  # so the search found the optimum
    assert ctx.metrics["effective_search_evaluations"] <= math.ceil(math.log2(total)) + 2


def test_third_party_pruner_gets_the_same_answer_as_the_cached_one():
    state = lenet_like()
    ours = prune_effective(P.MagnitudePruner(MagnitudePrunerConfig(compression=50)), state, None, 0.02)
    third = ThirdPartyMagnitude()
    theirs = prune_effective(third, state, None, 0.02)
    assert all(torch.equal(ours[n], theirs[n]) for n in ours)
    assert third.calls > 3


def test_random_quota_pruning_reaches_the_effective_target():
    state = lenet_like()
    total = sum(p.numel() for p in state.prunable().values())
    for quota in ("uniform", "erk", "igq"):
        masks = prune_effective(P.RandomPruner(RandomPrunerConfig(compression=100, quota=quota)), state, None, 0.01)
        eff = count_kept(EffectiveMasks(state.model, SHAPE)(masks))
        assert eff >= round(0.01 * total)
        assert eff <= round(0.03 * total)  # not wildly over-dense either


def test_synflow_needs_almost_no_extra_weights():
    state = lenet_like()
    masks = prune_effective(P.SynflowPruner(SynflowPrunerConfig(compression=30, iterations=20)), state, None, 1 / 30)
    total = sum(p.numel() for p in state.prunable().values())
    wanted = round(total / 30)
    assert count_kept(EffectiveMasks(state.model, SHAPE)(masks)) >= wanted
    assert count_kept(masks) <= 1.05 * wanted


class RewindingThirdParty(ThirdPartyMagnitude):
    """Scores the current (trained) weights, then rewinds them to init, as lottery-ticket code does."""

    def prune(self, state, ctx, density):
        masks = super().prune(state, ctx, density)
        state.rewind()
        return masks


def test_every_attempt_starts_from_the_weights_at_entry():
    state = lenet_like()
    with torch.no_grad():  # "trained" weights, unlike the ones at init
        for p in state.model.parameters():
            p.mul_(-3.0).add_(0.01)
    trained = {k: v.clone() for k, v in state.model.state_dict().items()}
    plain = prune_effective(ThirdPartyMagnitude(), state, None, 0.02)
    rewinding = RewindingThirdParty()
    masks = prune_effective(rewinding, state, None, 0.02)
    assert rewinding.calls > 3
    assert all(torch.equal(plain[n], masks[n]) for n in plain)  # later attempts did not score init weights
    weights = state.model.state_dict()
    assert all(torch.equal(weights[k], state.init_state[k]) for k in weights)  # the chosen attempt rewound
    assert not all(torch.equal(trained[k], state.init_state[k]) for k in trained)


class RefusesLowDensities(ThirdPartyMagnitude):
    """Like a quota that cannot reach densities below a floor (uniform-plus with a dense first layer)."""

    floor = 0.05

    def prune(self, state, ctx, density):
        if density < self.floor:
            raise ConfigError("cannot reach so low a density", key="quota")
        return super().prune(state, ctx, density)


def test_the_search_starts_above_densities_the_pruner_refuses():
    state = lenet_like()
    total = sum(p.numel() for p in state.prunable().values())
    pruner = RefusesLowDensities()
    masks = prune_effective(pruner, state, None, 0.02)
    kept = count_kept(masks)
    assert kept >= math.ceil(RefusesLowDensities.floor * total)  # the smallest budget it accepts, or more
    assert count_kept(EffectiveMasks(state.model, SHAPE)(masks)) >= math.ceil(0.02 * total)
    pruner.floor = 2.0  # refuses everything: the pruner's own error comes through
    with pytest.raises(ConfigError, match="cannot reach so low a density"):
        prune_effective(pruner, state, None, 0.02)
