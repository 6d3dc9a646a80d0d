"""``random/<pruner>``: the source pruner's layer counts, random weights inside them."""

from __future__ import annotations

import math

import pytest
import torch

from deepscope_sparsity import configs as C
from deepscope_sparsity import pruners as P
from deepscope_sparsity import scores as S
from sparsity_fakes import make_state, mlp

SHAPE = (1, 4, 4)
SOURCES = [
    (P.SnipPruner, P.RandomWithinSnip, C.SnipPrunerConfig, C.RandomWithinSnipConfig,
     dict(samples=32, batch_size=16)),
    (P.SynflowPruner, P.RandomWithinSynflow, C.SynflowPrunerConfig, C.RandomWithinSynflowConfig,
     dict(iterations=10)),
    (P.MagnitudePruner, P.RandomWithinMagnitude, C.MagnitudePrunerConfig, C.RandomWithinMagnitudeConfig, {}),
    (P.LampPruner, P.RandomWithinLamp, C.LampPrunerConfig, C.RandomWithinLampConfig, {}),
    (P.GraspPruner, P.RandomWithinGrasp, C.GraspPrunerConfig, C.RandomWithinGraspConfig,
     dict(samples=32, batch_size=16)),
    (P.IterativeSnipPruner, P.RandomWithinIterativeSnip, C.IterativeSnipPrunerConfig,
     C.RandomWithinIterativeSnipConfig, dict(iterations=5, batch_size=16)),
]


def state(seed=0):
    return make_state(mlp([16, 60, 40, 3], seed=seed), SHAPE, seed=seed)


def brute_force_random(st, seed, counts):
    """Per layer: the counts[i] largest i.i.d. scores, by a full sort."""
    out = {}
    for (name, s), k in zip(S.random_scores(st, seed).items(), counts):
        keep = torch.zeros(s.numel(), dtype=torch.bool)
        keep[torch.argsort(s.flatten(), descending=True, stable=True)[:k]] = True
        out[name] = keep.view(s.shape)
    return out


@pytest.mark.parametrize("source_cls, within_cls, source_cfg, within_cfg, extra", SOURCES)
@pytest.mark.parametrize("density", [0.3, 0.05])
def test_layer_counts_are_the_sources_and_the_weights_are_the_seeds_random_choice(
        source_cls, within_cls, source_cfg, within_cfg, extra, density):
    st = state()
    source = source_cls(source_cfg(compression=1 / density, **extra)).prune(st, None, density)
    masks = within_cls(within_cfg(compression=1 / density, random_seed=11, **extra)).prune(st, None, density)
    counts = [int(m.sum()) for m in source.values()]
    assert [int(m.sum()) for m in masks.values()] == counts
    expected = brute_force_random(st, 11, counts)
    assert all(torch.equal(masks[n], expected[n]) for n in masks)


def test_the_kept_weights_overlap_the_sources_only_by_chance():
    """Hypergeometric: a random k of n meets the source's k in k^2/n weights on average."""
    st = state()
    density = 0.2
    source = P.SnipPruner(C.SnipPrunerConfig(compression=5, samples=32, batch_size=16)).prune(st, None, density)
    z_scores = []
    for seed in range(20):
        masks = P.RandomWithinSnip(C.RandomWithinSnipConfig(compression=5, samples=32, batch_size=16,
                                                            random_seed=seed)).prune(st, None, density)
        for n in masks:
            N, k = masks[n].numel(), int(source[n].sum())
            if k in (0, N):
                continue
            mean = k * k / N
            var = k * (k / N) * (1 - k / N) * (N - k) / (N - 1)
            z_scores.append((int((masks[n] & source[n]).sum()) - mean) / math.sqrt(var))
    z = torch.tensor(z_scores)
    assert abs(float(z.mean())) * math.sqrt(len(z)) < 4 and 0.5 < float(z.std()) < 1.5
    # while SNIP itself is far from random: the same statistic for SNIP against magnitude is large
    magnitude = P.MagnitudePruner(C.MagnitudePrunerConfig(compression=5, quota="uniform")).prune(st, None, density)
    assert any(int((magnitude[n] & source[n]).sum()) > int(source[n].sum()) ** 2 / source[n].numel() + 10
               for n in source)


def test_masks_grow_nested_never_regrow_and_default_to_the_runs_seed():
    st = state()
    first = P.MagnitudePruner(C.MagnitudePrunerConfig(compression=2)).prune(st, None, 0.5)
    st.set_masks(first)
    pruner = P.RandomWithinMagnitude(C.RandomWithinMagnitudeConfig(compression=10, quota="erk"))
    previous = None
    for density in (0.02, 0.05, 0.1, 0.2):
        masks = pruner.prune(st, None, density)
        assert all(not (masks[n] & ~first[n]).any() for n in masks)
        if previous is not None:
            assert all(not (previous[n] & ~masks[n]).any() for n in masks)
        previous = masks
    explicit = P.RandomWithinMagnitude(C.RandomWithinMagnitudeConfig(compression=10, quota="erk",
                                                                     random_seed=st.seed)).prune(st, None, 0.2)
    other = P.RandomWithinMagnitude(C.RandomWithinMagnitudeConfig(compression=10, quota="erk",
                                                                  random_seed=st.seed + 1)).prune(st, None, 0.2)
    assert all(torch.equal(previous[n], explicit[n]) for n in previous)
    assert any(not torch.equal(previous[n], other[n]) for n in previous)
