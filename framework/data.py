"""What a dataset component returns: train/test sets in [0, 1] and their info."""

from __future__ import annotations

from typing import Any

import attrs
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset


@attrs.define
class DatasetInfo:
    """Shape, classes and normalization statistics; models are built from it."""

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]  # (channels, height, width)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()

    @property
    def channels(self) -> int:
        return self.input_shape[0]

    @property
    def num_inputs(self) -> int:
        c, h, w = self.input_shape
        return c * h * w


@attrs.define
class DataBundle:
    """Train and test sets (inputs in [0, 1], integer labels) plus loader settings."""

    train: Dataset
    test: Dataset
    info: DatasetInfo
    batch_size: int = 128
    test_batch_size: int = 1000
    num_workers: int = 0
    _cache: dict = attrs.field(factory=dict, repr=False)

    def train_loader(self, batch_size: int | None = None, shuffle: bool = True,
                     generator: torch.Generator | None = None, drop_last: bool = False) -> DataLoader:
        return DataLoader(self.train, batch_size=batch_size or self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, generator=generator, drop_last=drop_last,
                          persistent_workers=False)

    def test_loader(self, batch_size: int | None = None) -> DataLoader:
        return DataLoader(self.test, batch_size=batch_size or self.test_batch_size, shuffle=False,
                          num_workers=self.num_workers)

    def tensors(self, split: str = "test", n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` examples of a split as stacked (x, y) tensors on CPU (cached)."""
        dataset = self.train if split == "train" else self.test
        total = len(dataset)
        n = total if n is None else min(n, total)
        key = (split, n)
        if key not in self._cache:
            if isinstance(dataset, TensorDataset):
                x, y = dataset.tensors[0][:n], dataset.tensors[1][:n]
            else:
                xs, ys = [], []
                for xb, yb in DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=1000):
                    xs.append(xb)
                    ys.append(yb)
                x, y = torch.cat(xs), torch.cat(ys)
            self._cache[key] = (x, y.long())
        return self._cache[key]


@attrs.define
class SyntheticData:
    """A distilled dataset: inputs in [0, 1], labels (hard or soft), optional learned lr."""

    x: torch.Tensor
    y: torch.Tensor
    lr: float | None = None
    extras: dict[str, Any] = attrs.field(factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])
