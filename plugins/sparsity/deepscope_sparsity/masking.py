"""Turning scores into masks: global top-k, per-layer top-k and iterative rankings.

Scores are "higher = keep". Weights already pruned carry -inf and are never
chosen, so a new mask is always a subset of the current one.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

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
    missing = k - int(keep.sum())
    if missing > 0:
        ties = torch.nonzero(flat == threshold).flatten()[:missing]
        keep[ties] = True
    return keep


def layer_top(scores: Masks, counts: Sequence[int]) -> Masks:
    """Keep the ``counts[i]`` highest finite scores within layer i."""
    return {n: global_top({n: s}, int(k))[n] for (n, s), k in zip(scores.items(), counts)}


def iterative_ranking(score_fn: Callable[[Masks], Masks], alive: Masks, density: float, iterations: int,
                      progress=iter) -> Masks:
    """Prune to ``density`` in ``iterations`` exponential steps and return a global ranking.

    A weight pruned at step t gets the key 2t + its score normalized within
    that step's pruned batch; survivors get 2(T+1) + normalized final score.
    Keeping the top keys at any density >= ``density`` therefore replays the
    pruning order, so the effective-sparsity search needs no re-run.

    The bookkeeping runs on one flat vector of every layer and only over the
    weights still alive (their flat indices, ascending, so ties still go to the
    lower index): each step costs a selection among the survivors, not a pass
    over every layer's full tensor.
    """
    names = list(alive)
    shapes = [alive[n].shape for n in names]
    sizes = [alive[n].numel() for n in names]
    total = sum(sizes)
    flat_alive = torch.cat([alive[n].reshape(-1) for n in names])
    device = flat_alive.device
    index = torch.nonzero(flat_alive).flatten()
    keys = torch.full((total,), -torch.inf, dtype=torch.float64, device=device)
    mask = flat_alive.clone()

    def as_masks(flat: torch.Tensor) -> Masks:
        return {n: part.view(shape) for n, part, shape in zip(names, flat.split(sizes), shapes)}

    def alive_scores() -> torch.Tensor:
        scores = score_fn(as_masks(mask))
        return torch.cat([scores[n].reshape(-1) for n in names])[index].to(torch.float64)

    for t in progress(range(1, iterations + 1)):
        values = alive_scores()
        keep = kth_largest_mask(values, kept_total(density ** (t / iterations), total))
        _assign_flat_keys(keys, index[~keep], values[~keep], 2.0 * t)
        mask[index[~keep]] = False
        index = index[keep]
    _assign_flat_keys(keys, index, alive_scores(), 2.0 * (iterations + 1))
    return as_masks(keys)


def _assign_flat_keys(keys: torch.Tensor, index: torch.Tensor, values: torch.Tensor, base: float) -> None:
    if values.numel() == 0:
        return
    lo, hi = values.min(), values.max()
    keys[index] = base + (values - lo) / (hi - lo + 1e-10)
