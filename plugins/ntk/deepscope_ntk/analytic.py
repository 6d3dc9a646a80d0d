"""Analytic (infinite-width) NNGP and NTK of fully connected ReLU networks.

The network is neural-tangents' ``stax.serial(*[Dense(w, W_std, b_std), Relu()] * depth,
Dense(k, W_std, b_std))`` in the NTK parameterization: a layer computes
``W_std / sqrt(fan_in) * W x + b_std * b`` with W, b ~ N(0, 1). The recursion, as stax does it:

- input: ``nngp = x . x' / d``, ``ntk = 0``;
- Dense: ``nngp <- W_std^2 nngp + b_std^2``, ``ntk <- nngp(new) + W_std^2 ntk``;
- Relu (arc-cosine kernel of degree 1): with ``cos t = nngp(x, x') / sqrt(q(x) q(x'))``,
  ``nngp <- sqrt(q q') (sin t + (pi - t) cos t) / (2 pi)``, ``ntk <- ntk (pi - t) / (2 pi)``.

The kernel of each of the k outputs is the same and outputs are independent: the full kernel is
this scalar times I_k. Computed in float64 and differentiable in the inputs (the attacks need it).
"""

from __future__ import annotations

import math
from typing import Any

GETS = ("ntk", "nngp")


def fc_relu_kernel(x1: Any, x2: Any = None, *, depth: int = 1, w_std: float = math.sqrt(2.0),
                   b_std: float = 0.1, get: str = "ntk") -> Any:
    """The (n1, n2) NTK or NNGP of a depth-``depth`` ReLU network between flattened inputs."""
    import torch

    if get not in GETS:
        raise ValueError(f"get must be one of {GETS}, not {get!r}")
    if depth < 0:
        raise ValueError(f"depth must be >= 0 (hidden layers), not {depth!r}")
    a = x1.flatten(1).to(torch.float64)
    b = a if x2 is None else x2.flatten(1).to(torch.float64)
    dim = a.shape[1]
    cross = a @ b.T / dim
    qa, qb = (a * a).sum(1) / dim, (b * b).sum(1) / dim
    w2, b2 = w_std ** 2, b_std ** 2
    cross, qa, qb = w2 * cross + b2, w2 * qa + b2, w2 * qb + b2  # first Dense
    ntk = cross
    for _ in range(depth):
        norm = torch.sqrt(qa[:, None] * qb[None, :])
        cos = (cross / norm).clamp(-1.0, 1.0)
        theta = _angle(cos)
        relu = norm * (torch.sin(theta) + (math.pi - theta) * cos) / (2 * math.pi)
        ntk = ntk * (math.pi - theta) / (2 * math.pi)
        qa, qb = qa / 2, qb / 2  # the arc-cosine kernel on the diagonal: q / 2
        cross = w2 * relu + b2  # next Dense
        qa, qb = w2 * qa + b2, w2 * qb + b2
        ntk = cross + w2 * ntk
    return ntk if get == "ntk" else cross


def _angle(cos: Any) -> Any:
    """arccos, snapped to 0 (or pi) within 1e-13 of +-1: exact on the diagonal x = x', where rounding
    would otherwise give an angle of order 1e-8, and free of the infinite gradient of arccos at +-1."""
    import torch

    near = cos.abs() > 1 - 1e-13
    safe = torch.where(near, torch.zeros_like(cos), cos)
    snapped = torch.where(cos > 0, torch.zeros_like(cos), torch.full_like(cos, math.pi))
    return torch.where(near, snapped, torch.arccos(safe))
