"""Circles: the official notebook's two-dimensional, three-class toy problem, generated here.

Points are uniform in the disk of radius 0.9 and labelled by their radius:
class 0 inside 0.5, class 1 up to 0.7, class 2 beyond, with a band of width
``band`` inside each boundary where either neighbouring label is equally likely
(the official file has such overlaps: class 1 starts at r = 0.45, class 2 at
0.65). The file itself is not copied. Inputs are stored in [0, 1] (the core's
convention) and the normalization maps them back to the raw coordinates, so the
model sees (x, y) in [-0.9, 0.9] as in the notebook.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import TensorDataset

from deepscope import DataBundle, DatasetInfo

RADIUS = 0.9
BOUNDARIES = (0.5, 0.7)
#: stored = (raw / RADIUS + 1) / 2, so (stored - MEAN) / STD = raw
MEAN, STD = 0.5, 1 / (2 * RADIUS)


def circles_points(n: int, band: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n raw points (n, 2) in the disk and their labels (n,)."""
    r = RADIUS * torch.rand(n, generator=generator, dtype=torch.float64).sqrt()
    angle = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    y = torch.bucketize(r, torch.tensor(BOUNDARIES, dtype=torch.float64))
    coin = torch.rand(n, generator=generator) < 0.5
    for k, edge in enumerate(BOUNDARIES):
        mixed = (r >= edge - band) & (r < edge) & coin
        y[mixed] = k + 1
    return torch.stack([r * angle.cos(), r * angle.sin()], 1), y


def build_circles(config) -> DataBundle:
    gen = torch.Generator().manual_seed(config.seed)

    def split(n):
        xy, y = circles_points(n, config.band, gen)
        stored = ((xy / RADIUS + 1) / 2).to(torch.float32).view(n, 1, 1, 2)
        return TensorDataset(stored, y)

    info = DatasetInfo("circles", 3, (1, 1, 2), (MEAN,), (STD,), class_names=("inner", "middle", "outer"))
    return DataBundle(split(config.n_train), split(config.n_test), info, batch_size=config.batch_size,
                      test_batch_size=config.n_test)
