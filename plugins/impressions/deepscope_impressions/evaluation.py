"""Batches straight from task datasets, per-task accuracy, and the continual-learning record in ``state.extras``.

The record is plain data (lists and dicts), so checkpoints carry it and a resumed run
continues the same accuracy matrix.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

RECORD = "impressions/record"


def fetch(dataset: Dataset, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch by indices: one call for datasets with ``batch`` (task views, the standard sets), else per item."""
    batch = getattr(dataset, "batch", None)
    if callable(batch):
        return batch(index)
    items = [dataset[int(i)] for i in index]
    return torch.stack([x for x, _ in items]), torch.as_tensor([int(y) for _, y in items])


def batches(dataset: Dataset, batch_size: int, generator: torch.Generator | None = None, n: int | None = None):
    """Shuffled (with ``generator``) or in-order batches of the first ``n`` examples."""
    total = len(dataset) if n is None else min(n, len(dataset))
    order = torch.randperm(total, generator=generator) if generator is not None else torch.arange(total)
    for start in range(0, total, batch_size):
        yield fetch(dataset, order[start:start + batch_size])


@torch.no_grad()
def accuracy(model, dataset: Dataset, device, n: int | None = None, batch_size: int = 1000) -> float:
    correct = total = 0
    for x, y in batches(dataset, batch_size, n=n):
        x, y = x.to(device), y.to(device)
        correct += int((model(x).argmax(1) == y).sum())
        total += int(y.numel())
    return correct / max(total, 1)


def record(state) -> dict:
    """The run's continual-learning record: tasks learned in order, the accuracy matrix, slots and bases."""
    rec = state.extras.get(RECORD)
    if rec is None:
        rec = {"learned": [], "matrix": [], "method": {}, "basis": {}, "slots": {}}
        state.extras[RECORD] = rec
    return rec


def require_record(state, what: str) -> dict:
    from deepscope import ConfigError

    rec = state.extras.get(RECORD)
    if not rec or not rec["learned"]:
        raise ConfigError(f"{what} needs tasks learned by a `continual` train stage before it; add a "
                          "[[stage]] do = \"train\" use = \"continual\" above it", key="use")
    return rec


def require_supermask(state, key: str = "use"):
    """The run's body, which must be one of this plugin's supermask models."""
    from deepscope import ConfigError

    from .supermask import SupermaskNet

    body = state.model.body
    if not isinstance(body, SupermaskNet):
        raise ConfigError(f"this component needs a supermask model (supermask-mlp, supermask-lenet), not "
                          f"{type(body).__name__}; set [model] use = \"supermask-mlp\"", key=key)
    return body
