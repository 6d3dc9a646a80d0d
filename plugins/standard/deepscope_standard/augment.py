"""Differentiable augmentations for dataset distillation (RaT-BPTT's flip-or-rotate).

Every function draws its random parameters from an explicit ``torch.Generator`` (never the global
RNG), so a run is reproducible and the same draw can be replayed on a second batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def flip_rotate(x: torch.Tensor, generator: torch.Generator, *, flip_prob: float = 0.5,
                max_degrees: float = 15.0) -> torch.Tensor:
    """RaT-BPTT's ``flip_rotate``: per call, either a horizontal flip of each image with ``flip_prob`` or a
    rotation of each image by an angle uniform in [-max_degrees, max_degrees] (bilinear
    ``affine_grid``/``grid_sample``, zero padding, ``align_corners=False``, as the official code).
    Differentiable in ``x``."""
    choice = torch.randint(0, 2, (1,), generator=generator).item()
    n = x.shape[0]
    if choice == 0:
        flip = torch.rand(n, 1, 1, 1, generator=generator) < flip_prob
        return torch.where(flip.to(x.device), x.flip(3), x)
    angle = (torch.rand(n, generator=generator, dtype=torch.float64) - 0.5) * 2 * math.radians(max_degrees)
    return rotate(x, angle.to(x.dtype))


def rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate each image by ``angle`` (radians, one per image) about its centre, bilinear, zero padding."""
    cos, sin = angle.cos(), angle.sin()
    zero = torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)
