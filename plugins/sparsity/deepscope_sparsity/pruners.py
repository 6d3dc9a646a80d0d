"""The pruners. Each caches its ranking per run state, so the effective-sparsity
search (which calls ``prune`` about log2 N times) scores the network only once."""

from __future__ import annotations

import torch

from . import scores as S
from .masking import alive_masks, global_top, iterative_ranking, kept_total, layer_top, restrict
from .quotas import layer_counts


class _Pruner:
    """Global top-k of cached scores; subclasses say how to score."""

    #: the ranking holds for every density >= the one it was computed at (0: any)
    density_dependent = False

    def __init__(self, config):
        self.config = config
        self._cache = None

    def scores(self, state, ctx, density):  # pragma: no cover - abstract
        raise NotImplementedError

    def ranking(self, state, ctx, density):
        key = (id(state), state.step, state.epoch)
        cached = self._cache
        if cached is None or cached[0] != key or density < cached[1]:
            valid_from = density if self.density_dependent else 0.0
            self._cache = (key, valid_from, self.scores(state, ctx, density))
        return self._cache[2]

    def select(self, ranking, alive, density):
        total = sum(m.numel() for m in alive.values())
        return global_top(restrict(ranking, alive), kept_total(density, total))

    def prune(self, state, ctx, density):
        alive = alive_masks(state)
        masks = self.select(self.ranking(state, ctx, density), alive, density)
        if getattr(self.config, "rewind", False):
            state.rewind()
        return masks

    def seed(self, state):
        own = getattr(self.config, "seed", None)
        return state.seed if own is None else own


class _QuotaPruner(_Pruner):
    """Per-layer top-k with counts from the quota."""

    def select(self, ranking, alive, density):
        quota = self.config.quota
        if quota == "global":
            return super().select(ranking, alive, density)
        counts = layer_counts(quota, [tuple(m.shape) for m in alive.values()], density)
        return layer_top(restrict(ranking, alive), counts)


class RandomPruner(_QuotaPruner):
    def scores(self, state, ctx, density):
        return S.random_scores(state, self.seed(state))


class MagnitudePruner(_QuotaPruner):
    def scores(self, state, ctx, density):
        return S.magnitude_scores(state)


class LampPruner(_Pruner):
    def scores(self, state, ctx, density):
        return S.lamp_scores(state)


class SnipPruner(_Pruner):
    def scores(self, state, ctx, density):
        c = self.config
        return S.snip_scores(state, c.samples, c.batch_size, self.seed(state))


class GraspPruner(_Pruner):
    def scores(self, state, ctx, density):
        c = self.config
        return S.grasp_scores(state, c.samples, c.batch_size, self.seed(state), c.temperature)


class _IterativePruner(_Pruner):
    density_dependent = True

    def scorer(self, state):  # pragma: no cover - abstract
        raise NotImplementedError

    def scores(self, state, ctx, density):
        iterations = self.config.iterations
        progress = (lambda it: ctx.progress(it, total=iterations, description=f"{ctx.prefix} iterations")) \
            if ctx is not None else iter
        with torch.enable_grad():
            return iterative_ranking(self.scorer(state), alive_masks(state), density, iterations, progress)


class SynflowPruner(_IterativePruner):
    def scorer(self, state):
        dtype = torch.float32 if self.config.dtype == "float32" else torch.float64
        return S.SynFlowScorer(state, dtype)


class IterativeSnipPruner(_IterativePruner):
    def scorer(self, state):
        return S.SnipAtMask(state, self.config.batch_size, self.seed(state))


class _RandomWithin(_Pruner):
    """``random/<pruner>``: each layer keeps as many weights as the source pruner would, chosen at random.

    The source's ranking is cached as usual, so the effective-target search
    scores the network once; the random scores are drawn once per seed, so the
    masks of one layer are nested as its quota grows.
    """

    source_cls: type = _Pruner

    def __init__(self, config):
        super().__init__(config)
        self.source = self.source_cls(config)

    def prune(self, state, ctx, density):
        alive = alive_masks(state)
        source = self.source.select(self.source.ranking(state, ctx, density), alive, density)
        seed = state.seed if self.config.random_seed is None else self.config.random_seed
        scores = restrict(S.random_scores(state, seed), alive)
        masks = layer_top(scores, [int(source[n].sum()) for n in scores])
        if getattr(self.config, "rewind", False):
            state.rewind()
        return masks


def random_within(source_cls: type) -> type:
    return type(f"RandomWithin{source_cls.__name__}", (_RandomWithin,), {"source_cls": source_cls})


RandomWithinSnip = random_within(SnipPruner)
RandomWithinIterativeSnip = random_within(IterativeSnipPruner)
RandomWithinGrasp = random_within(GraspPruner)
RandomWithinSynflow = random_within(SynflowPruner)
RandomWithinMagnitude = random_within(MagnitudePruner)
RandomWithinLamp = random_within(LampPruner)
