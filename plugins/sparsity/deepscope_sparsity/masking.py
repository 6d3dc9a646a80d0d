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
    finite = torch.isfinite(flat)
    if k >= n:
        return finite
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
    """
    total = sum(m.numel() for m in alive.values())
    mask = {n: m.clone() for n, m in alive.items()}
    keys = {n: torch.full(m.shape, -torch.inf, dtype=torch.float64, device=m.device) for n, m in alive.items()}
    scores = None
    for t in progress(range(1, iterations + 1)):
        scores = restrict(score_fn(mask), mask)
        new = global_top(scores, kept_total(density ** (t / iterations), total))
        removed = {n: mask[n] & ~new[n] for n in mask}
        _assign_keys(keys, scores, removed, 2.0 * t)
        mask = new
    scores = restrict(score_fn(mask), mask)
    _assign_keys(keys, scores, mask, 2.0 * (iterations + 1))
    return keys


def _assign_keys(keys: Masks, scores: Masks, chosen: Masks, base: float) -> None:
    values = torch.cat([scores[n][chosen[n]] for n in scores])
    if values.numel() == 0:
        return
    lo, hi = values.min(), values.max()
    for n in scores:
        sel = chosen[n]
        keys[n][sel] = base + (scores[n][sel] - lo) / (hi - lo + 1e-10)
