"""Baselines every distilled set is compared with: a class-balanced random real subset, and class means."""

from __future__ import annotations

import torch

from deepscope import ConfigError, SyntheticData

from .grid import log_synthetic_grid
from .trainers import hard_labels

SEED_OFFSET = 3000  # the baseline's private generator: run seed + 3000 (or its own `seed`)


def random_real(x: torch.Tensor, y: torch.Tensor, ipc: int, num_classes: int,
                generator: torch.Generator) -> torch.Tensor:
    """Indices of ``ipc`` distinct random examples of each class (class 0's first, then class 1's...)."""
    classes = hard_labels(y)
    chosen = []
    for c in range(num_classes):
        members = (classes == c).nonzero().flatten()
        _check_count(c, len(members), ipc)
        chosen.append(members[torch.randperm(len(members), generator=generator)[:ipc]])
    return torch.cat(chosen)


def class_means(x: torch.Tensor, y: torch.Tensor, ipc: int, num_classes: int,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, the means of ``ipc`` random near-equal parts of its images (``ipc = 1``: the class mean).

    Returns ``(images, labels)``, class-major. The parts of a class of n images are a random
    permutation cut into ``ipc`` consecutive pieces of sizes differing by at most one.
    """
    classes = hard_labels(y)
    images, labels = [], []
    for c in range(num_classes):
        members = (classes == c).nonzero().flatten()
        _check_count(c, len(members), ipc)
        shuffled = members[torch.randperm(len(members), generator=generator)]
        for part in torch.tensor_split(shuffled, ipc):
            images.append(x[part].double().mean(0).to(x.dtype))
            labels.append(c)
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


def _check_count(c: int, have: int, ipc: int) -> None:
    if have < ipc:
        raise ConfigError(f"class {c} has {have} training images, fewer than ipc = {ipc}; lower `ipc` (or use "
                          "more of the dataset).", key="ipc")


class SyntheticBaseline:
    """The ``synthetic-baseline`` distiller: the same-size baselines of a distilled set, in the same run."""

    def __init__(self, config):
        self.config = config

    def distill(self, state, ctx) -> SyntheticData:
        c = self.config
        x, y = state.data.tensors("train")
        k = state.info.num_classes
        seed = c.seed if c.seed is not None else state.seed + SEED_OFFSET
        generator = torch.Generator().manual_seed(seed)
        if c.method == "random-real":
            idx = random_real(x, y, c.ipc, k, generator)
            result = SyntheticData(x[idx].clone(), hard_labels(y[idx]).clone(),
                                   extras={"method": c.method, "indices": idx, "seed": seed})
        else:
            images, labels = class_means(x, y, c.ipc, k, generator)
            result = SyntheticData(images, labels, extras={"method": c.method, "seed": seed})
        if c.grid and ctx.state.tracker is not None:
            log_synthetic_grid(ctx, result, state.info)
        return result
