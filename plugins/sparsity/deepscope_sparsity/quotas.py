"""Layerwise quotas: how an overall density is split over layers.

Each function maps the layers' shapes and an overall density to per-layer
densities in [0, 1]; :func:`layer_counts` turns them into whole weights.
"""

from __future__ import annotations

import math
from typing import Sequence

from deepscope import ConfigError

QUOTAS = ("uniform", "uniform-plus", "erk", "igq")


def layer_densities(quota: str, shapes: Sequence[Sequence[int]], density: float) -> list[float]:
    sizes = [math.prod(s) for s in shapes]
    if quota == "uniform":
        return [float(density)] * len(sizes)
    if quota == "uniform-plus":
        return uniform_plus(sizes, density)
    if quota == "erk":
        return erk(shapes, density)
    if quota == "igq":
        return igq(sizes, density)
    raise ValueError(f"'quota' must be one of {', '.join(QUOTAS)}: {quota!r}")


def uniform_plus(sizes: Sequence[int], density: float) -> list[float]:
    """Gale et al.: first layer dense, last layer at most 80% sparse, the rest uniform."""
    if len(sizes) < 2:
        return [float(density)] * len(sizes)
    sparsity = 1.0 - density
    total = sum(sizes)
    rest = sparsity * total / sum(sizes[1:])
    last = min(rest, 0.8)
    middle = sizes[1:-1]
    excess = max(0.0, (rest - 0.8) * sizes[-1])
    if middle:
        mid = rest + excess / sum(middle)
        sparsities = [0.0] + [mid] * len(middle) + [last]
    else:
        sparsities = [0.0, rest]
    if max(sparsities) > 1.0:  # the dense first layer holds more than the whole budget
        raise ConfigError(f"quota 'uniform-plus' keeps the first layer dense, so it cannot reach density "
                          f"{density:g} on layers of sizes {list(sizes)}; lower the compression or use another "
                          "quota (uniform, erk, igq)", key="quota")
    return [1.0 - s for s in sparsities]


def erk(shapes: Sequence[Sequence[int]], density: float) -> list[float]:
    """Erdos-Renyi-kernel densities proportional to sum(shape)/prod(shape).

    Layers that would be denser than 1 pass their negative sparsity on to the
    layer before them, from the last layer to the first (the official
    redistribution, not RigL's re-solve).
    """
    sizes = [math.prod(s) for s in shapes]
    raw = [sum(s) / math.prod(s) for s in shapes]
    scale = density * sum(sizes) / sum(n * c for n, c in zip(sizes, raw))
    sparsity = [1.0 - scale * c for c in raw]
    for i in range(len(sizes) - 1, 0, -1):
        if sparsity[i] < 0:
            sparsity[i - 1] = (sizes[i - 1] * sparsity[i - 1] + sizes[i] * sparsity[i]) / sizes[i - 1]
            sparsity[i] = 0.0
    if sparsity[0] < 0:  # the walk pushed more than the first layer holds: that density would be lost
        return erk_resolve(sizes, raw, density)
    return [min(1.0, max(0.0, 1.0 - s)) for s in sparsity]


def erk_resolve(sizes: Sequence[int], raw: Sequence[float], density: float) -> list[float]:
    """ERK with RigL's rule: layers that would be denser than 1 are made dense and k is solved again.

    Used only where the official last-to-first walk would drop density (its first
    layer overflows, typical of a small first conv); this keeps the overall
    density exact.
    """
    dense: set[int] = set()
    budget = density * sum(sizes)
    while True:
        free = [i for i in range(len(sizes)) if i not in dense]
        k = (budget - sum(sizes[i] for i in dense)) / sum(sizes[i] * raw[i] for i in free)
        overflow = {i for i in free if k * raw[i] > 1.0}
        if not overflow:
            return [1.0 if i in dense else k * raw[i] for i in range(len(sizes))]
        dense |= overflow


def igq_density(force: float, size: int) -> float:
    """Ideal-gas quota: a cylinder of length n and cross-section 1/n under force F keeps 1/(1 + F n)."""
    return 1.0 / (1.0 + force * size)


def igq_force(sizes: Sequence[int], density: float) -> float:
    """The force F whose quotas keep ``density`` overall, to within 1/N, by bisection on log F."""
    total = sum(sizes)
    if density >= 1.0:
        return 0.0

    def kept(force):
        return sum(n * igq_density(force, n) for n in sizes) / total

    lo, hi = -40.0, 20.0  # log10 F; kept() falls from ~1 to ~0 across this range
    for _ in range(400):
        mid = (lo + hi) / 2
        value = kept(10.0 ** mid)
        if abs(value - density) < 1.0 / total:
            return 10.0 ** mid
        if value > density:
            lo = mid
        else:
            hi = mid
    return 10.0 ** ((lo + hi) / 2)


def igq(sizes: Sequence[int], density: float) -> list[float]:
    force = igq_force(sizes, density)
    return [igq_density(force, n) for n in sizes]


def layer_counts(quota: str, shapes: Sequence[Sequence[int]], density: float) -> list[int]:
    """Weights kept per layer. IGQ keeps at least one weight in every layer (its quotas never vanish)."""
    densities = layer_densities(quota, shapes, density)
    counts = []
    for d, shape in zip(densities, shapes):
        n = math.prod(shape)
        k = int(round(d * n))
        if quota == "igq":
            k = max(1, k)
        counts.append(min(n, max(0, k)))
    return counts
