"""What one meta-step sees: the inner synthetic batches, the real batch, the initial images.

All draws come from explicit generators (never the global RNG), which the distiller checkpoints.
"""

from __future__ import annotations

import torch


class InnerSampler:
    """The official ``subsample``: ``classes_per_batch`` random classes (all by default), and of each
    ``min(batch_per_class, images of the class)`` random images of the *active* block, sorted; images
    of earlier (Boost-DD) blocks join every batch."""

    def __init__(self, classes: torch.Tensor, num_classes: int, batch_per_class: int,
                 classes_per_batch: int | None, generator: torch.Generator):
        self.classes, self.num_classes = classes.cpu(), num_classes
        self.batch_per_class = batch_per_class
        self.classes_per_batch = min(classes_per_batch or num_classes, num_classes)
        self.generator = generator
        self.set_active(torch.ones(len(classes), dtype=torch.bool), torch.zeros(len(classes), dtype=torch.bool))

    def set_active(self, sampled: torch.Tensor, always: torch.Tensor) -> None:
        """``sampled``: images drawn from per step; ``always``: images in every step (earlier blocks)."""
        self.members = [(self.classes == c).logical_and(sampled).nonzero().flatten() for c in range(self.num_classes)]
        self.always = [(self.classes == c).logical_and(always).nonzero().flatten() for c in range(self.num_classes)]

    def indices(self) -> torch.Tensor:
        chosen = torch.arange(self.num_classes)
        if self.classes_per_batch < self.num_classes:
            chosen = torch.randperm(self.num_classes, generator=self.generator)[:self.classes_per_batch].sort().values
        out = []
        for c in chosen.tolist():
            members = self.members[c]
            pick = torch.randperm(len(members), generator=self.generator)[:self.batch_per_class].sort().values
            out += [self.always[c], members[pick]]
        return torch.cat(out)


class RealBatches:
    """Passes over the real training set in random order, ``batch`` images a step (the last partial batch
    of a pass is dropped). ``position`` and ``order`` are the state a resumed run needs."""

    def __init__(self, n: int, batch: int, generator: torch.Generator):
        self.n, self.batch, self.generator = n, min(batch, n), generator
        self.order = torch.randperm(n, generator=generator)
        self.progress = {"position": 0}

    @property
    def steps_per_pass(self) -> int:
        return self.n // self.batch

    def next(self) -> tuple[torch.Tensor, bool, bool]:
        """(indices, this batch opens a pass, this batch closes it)."""
        position = self.progress["position"]
        if position >= self.steps_per_pass:
            self.order.copy_(torch.randperm(self.n, generator=self.generator))
            position = 0
        idx = self.order[position * self.batch:(position + 1) * self.batch]
        self.progress["position"] = position + 1
        return idx, position == 0, position + 1 == self.steps_per_pass


def unit_norm_noise(n: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """The official initialization: standard normal images, each scaled to L2 norm 1."""
    x = torch.randn(n, *shape, generator=generator)
    return x / x.flatten(1).norm(dim=1).view(n, *([1] * len(shape)))
