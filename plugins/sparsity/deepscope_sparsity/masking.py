"""Turning scores into masks: global top-k, per-layer top-k and iterative rankings.

Scores are "higher = keep". Weights already pruned carry -inf and are never
chosen, so a new mask is always a subset of the current one.
"""

from __future__ import annotations

import math
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

Masks = dict[str, torch.Tensor]


def kept_total(density: float, total: int) -> int:
    return max(0, min(total, int(round(density * total))))


def alive_masks(state) -> Masks:
    """The current masks over every prunable weight (all ones where none was set)."""
    out = {}
    for name, p in state.prunable().items():
        mask = state.masks.get(name)
        out[name] = torch.ones_like(p, dtype=torch.bool) if mask is None else mask.to(p.device).bool()
    return out


def restrict(scores: Masks, alive: Masks) -> Masks:
    """Scores of pruned weights set to -inf."""
    return {n: torch.where(alive[n], s.to(torch.float64), torch.full_like(s, -torch.inf, dtype=torch.float64))
            for n, s in scores.items()}


def global_top(scores: Masks, k: int) -> Masks:
    """Keep the k highest finite scores over all layers (ties: lower flat index first).

    Selection by the k-th largest value (linear time), not a full sort: on
    VGG-19's 20M weights a sort takes seconds per call, and SynFlow calls this
    once per iteration.
    """
    names = list(scores)
    flat = torch.cat([scores[n].reshape(-1).to(torch.float64) for n in names])
    keep = kth_largest_mask(flat, k)
    out, start = {}, 0
    for n in names:
        size = scores[n].numel()
        out[n] = keep[start:start + size].view(scores[n].shape)
        start += size
    return out


def kth_largest_mask(flat: torch.Tensor, k: int) -> torch.Tensor:
    n = flat.numel()
    if k <= 0 or n == 0:
        return torch.zeros(n, dtype=torch.bool, device=flat.device)
    if k >= n:
        return torch.isfinite(flat)
    if flat.device.type == "cpu":
        threshold = float(np.partition(flat.numpy(), n - k)[n - k])
    else:
        threshold = float(torch.kthvalue(flat, n - k + 1).values)
    keep = flat > threshold
    if threshold == -math.inf:
        return keep
    missing = k - int(torch.count_nonzero(keep))
    if missing > 0:
        ties = flat_nonzero(flat == threshold)[:missing]
        keep[ties] = True
    return keep


def flat_nonzero(mask: torch.Tensor) -> torch.Tensor:
    """Indices of the true entries of a 1-D mask, ascending (numpy's is ~10x torch's on one CPU thread)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return torch.nonzero(mask).flatten()


def take(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[index]`` for a 1-D tensor (numpy's gather on the CPU, several times torch's)."""
    if values.device.type == "cpu" and index.device.type == "cpu":
        return torch.from_numpy(np.take(values.numpy(), index.numpy()))
    return values[index.to(values.device)]


def put(target: torch.Tensor, index: torch.Tensor, values) -> None:
    """``target[index] = values`` in place for a 1-D tensor (numpy's scatter on the CPU)."""
    if target.device.type == "cpu" and index.device.type == "cpu":
        np.put(target.numpy(), index.numpy(), values.numpy() if isinstance(values, torch.Tensor) else values)
    else:
        target[index.to(target.device)] = values


def layer_top(scores: Masks, counts: Sequence[int]) -> Masks:
    """Keep the ``counts[i]`` highest finite scores within layer i."""
    return {n: global_top({n: s}, int(k))[n] for (n, s), k in zip(scores.items(), counts)}


class FlatScorer(Protocol):
    """A scorer over one flat vector of every prunable weight (the order of ``alive``), told what is
    pruned as it goes, so an iterative pruner never rebuilds per-layer masks (SynFlow's scorer is one)."""

    def start(self, alive: torch.Tensor) -> None:
        """Begin at this flat boolean mask."""

    def drop(self, index: torch.Tensor) -> None:
        """These flat indices are pruned from now on."""

    def flat_scores(self) -> torch.Tensor:
        """Scores of every weight at the current mask (the result may be reused by the next call)."""


class _PerLayerScorer:
    """A ``score_fn(masks) -> scores`` on per-layer dicts seen as a :class:`FlatScorer`."""

    def __init__(self, score_fn: Callable[[Masks], Masks], alive: Masks):
        self.score_fn = score_fn
        self.names = list(alive)
        self.shapes = [alive[n].shape for n in self.names]
        self.sizes = [alive[n].numel() for n in self.names]

    def start(self, alive: torch.Tensor) -> None:
        self.mask = alive.clone()

    def drop(self, index: torch.Tensor) -> None:
        put(self.mask, index, False)

    def flat_scores(self) -> torch.Tensor:
        masks = {n: part.view(shape) for n, part, shape in zip(self.names, self.mask.split(self.sizes), self.shapes)}
        scores = self.score_fn(masks)
        return torch.cat([scores[n].reshape(-1) for n in self.names])


def iterative_ranking(score_fn: Callable[[Masks], Masks] | FlatScorer, alive: Masks, density: float,
                      iterations: int, progress=iter) -> Masks:
    """Prune to ``density`` in ``iterations`` exponential steps and return a global ranking.

    A weight pruned at step t gets the key 2t + its score normalized within
    that step's pruned batch; survivors get 2(T+1) + normalized final score.
    Keeping the top keys at any density >= ``density`` therefore replays the
    pruning order, so the effective-sparsity search needs no re-run.

    The bookkeeping runs on one flat vector of every layer and only over the
    weights still alive (their flat indices, ascending, so ties still go to the
    lower index): each step costs a selection among the survivors in the
    scorer's own precision, and tells a :class:`FlatScorer` which weights it
    dropped instead of rebuilding every layer's mask.
    """
    names = list(alive)
    shapes = [alive[n].shape for n in names]
    sizes = [alive[n].numel() for n in names]
    total = sum(sizes)
    flat_alive = torch.cat([alive[n].reshape(-1) for n in names])
    scorer = score_fn if hasattr(score_fn, "flat_scores") else _PerLayerScorer(score_fn, alive)
    scorer.start(flat_alive)
    index = flat_nonzero(flat_alive)
    keys = torch.full((total,), -torch.inf, dtype=torch.float64, device=flat_alive.device)

    def alive_scores() -> torch.Tensor:
        return take(scorer.flat_scores(), index).to(flat_alive.device)

    for t in progress(range(1, iterations + 1)):
        values = alive_scores()
        keep = kth_largest_mask(values, kept_total(density ** (t / iterations), total))
        dropped = flat_nonzero(~keep)
        pruned = take(index, dropped)
        _assign_flat_keys(keys, pruned, take(values, dropped), 2.0 * t)
        scorer.drop(pruned)
        index = take(index, flat_nonzero(keep))
    _assign_flat_keys(keys, index, alive_scores(), 2.0 * (iterations + 1))
    return {n: part.view(shape) for n, part, shape in zip(names, keys.split(sizes), shapes)}


def _assign_flat_keys(keys: torch.Tensor, index: torch.Tensor, values: torch.Tensor, base: float) -> None:
    if values.numel() == 0:
        return
    values = values.to(torch.float64)
    lo, hi = values.min(), values.max()
    put(keys, index, (values - lo).div_(hi - lo + 1e-10).add_(base))
