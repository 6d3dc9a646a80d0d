"""What a dataset component returns (train/test sets in [0, 1] and their info), and distilled sets.

A dataset may also be a sequence of tasks (continual learning): ``tasks`` holds
one :class:`Task` per experience and ``bundle.task(t)`` is a bundle of task
``t`` alone. A distilled set is a :class:`SyntheticData`; ``bundle.with_train``
makes the bundle a stage trains on when it says ``data = "synthetic"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import attrs
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .shape import InputShape

LabelKind = Literal["hard", "soft", "regression"]
InputSpace = Literal["pixel", "input"]
SYNTHETIC_FORMAT = 1


@attrs.define
class DatasetInfo(InputShape):
    """Shape, classes and normalization statistics; models are built from it.

    ``preprocess`` (optional) is an ``nn.Module`` applied inside the model after normalization, such as
    ZCA whitening with its matrix as buffers, so attacks and probes keep seeing [0, 1] inputs; to hold a
    distilled set in its space (``SyntheticData.space = "input"``) it needs an ``inverse(z)`` method.
    ``num_tasks`` > 1 when the dataset is a sequence of tasks (``DataBundle.tasks``).
    """

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]  # (channels, height, width)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()
    preprocess: Any = None
    num_tasks: int = 1


@attrs.define
class Task:
    """One task of a task sequence: its own train and test sets and label space."""

    train: Dataset
    test: Dataset
    num_classes: int
    name: str = ""


def task_key(task: int, name: str) -> str:
    """The metric name of a per-task value: ``task_<j>/<name>`` (e.g. ``task_0/acc``), one convention for all."""
    return f"task_{int(task)}/{name}"


@attrs.define
class DataBundle:
    """Train and test sets (inputs in [0, 1]; integer, soft or regression labels) plus loader settings."""

    train: Dataset
    test: Dataset
    info: DatasetInfo
    batch_size: int = 128
    test_batch_size: int = 1000
    num_workers: int = 0
    tasks: tuple[Task, ...] = ()
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
        """The first ``n`` examples of a split as stacked (x, y) tensors on CPU (cached).

        Integer labels come back as int64; float labels (soft, regression) keep their dtype.
        """
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
            self._cache[key] = (x, y if y.is_floating_point() else y.long())
        return self._cache[key]

    def with_train(self, train: Dataset, batch_size: int | None = None) -> "DataBundle":
        """The same bundle with another training set (a distilled one); the test set stays the real one."""
        return attrs.evolve(self, train=train, batch_size=batch_size or self.batch_size, cache={})

    def task(self, t: int) -> "DataBundle":
        """A bundle of task ``t`` alone (its train/test sets and class count)."""
        if not self.tasks:
            raise IndexError(f"dataset {self.info.name!r} is not a task sequence")
        if not 0 <= t < len(self.tasks):
            raise IndexError(f"task {t} out of range: dataset {self.info.name!r} has {len(self.tasks)} tasks")
        task = self.tasks[t]
        info = attrs.evolve(self.info, num_classes=task.num_classes, num_tasks=1)
        return attrs.evolve(self, train=task.train, test=task.test, info=info, tasks=(), cache={})


@attrs.define
class SyntheticData:
    """A distilled dataset, with what it takes to train on it again.

    - ``x``: inputs, in pixel space ([0, 1], ``space = "pixel"``) or in the model's preprocessed space
      (``space = "input"``, e.g. ZCA-whitened, not clamped);
    - ``y``: labels; ``label_kind`` says how to read them: ``hard`` (int64 class indices), ``soft``
      (per-class probabilities or learned logit targets), ``regression`` (float targets, e.g. KIP's);
    - ``lr``: the learned learning rate, a scalar or a per-step schedule (1-D tensor), or None;
    - ``extras``: anything else plain (tensors, numbers, strings) a later stage may want.
    """

    x: torch.Tensor
    y: torch.Tensor
    lr: float | torch.Tensor | None = None
    extras: dict[str, Any] = attrs.field(factory=dict)
    label_kind: LabelKind = attrs.field(default=None)
    space: InputSpace = "pixel"

    def __attrs_post_init__(self):
        if self.label_kind is None:
            self.label_kind = "soft" if self.y.is_floating_point() else "hard"
        if self.label_kind not in ("hard", "soft", "regression"):
            raise ValueError(f"label_kind must be 'hard', 'soft' or 'regression', got {self.label_kind!r}")
        if self.space not in ("pixel", "input"):
            raise ValueError(f"space must be 'pixel' or 'input', got {self.space!r}")
        if self.label_kind == "hard" and self.y.is_floating_point():
            raise ValueError("hard labels must be integer class indices; use label_kind 'soft' or 'regression'")
        if len(self.x) != len(self.y):
            raise ValueError(f"{len(self.x)} inputs but {len(self.y)} labels")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def dataset(self) -> TensorDataset:
        """The set as a TensorDataset (detached, on the CPU) for loaders."""
        return TensorDataset(self.x.detach().cpu(), self.y.detach().cpu())

    def to_dict(self) -> dict:
        """Plain data (tensors, numbers, strings) that ``torch.load(weights_only=True)`` reads back."""
        lr = self.lr.detach().cpu() if isinstance(self.lr, torch.Tensor) else self.lr
        return {"format": SYNTHETIC_FORMAT, "x": self.x.detach().cpu(), "y": self.y.detach().cpu(), "lr": lr,
                "label_kind": self.label_kind, "space": self.space, "extras": plain_entries(self.extras)}

    @classmethod
    def from_dict(cls, saved: dict) -> "SyntheticData":
        return cls(saved["x"], saved["y"], saved.get("lr"), dict(saved.get("extras") or {}),
                   saved.get("label_kind"), saved.get("space", "pixel"))

    def detached(self) -> "SyntheticData":
        """A copy that holds no autograd graph (what a stage keeps after a distiller returns)."""
        lr = self.lr.detach().clone() if isinstance(self.lr, torch.Tensor) else self.lr
        return attrs.evolve(self, x=self.x.detach().clone(), y=self.y.detach().clone(), lr=lr,
                            extras=dict(self.extras))


def load_synthetic(path: str | Path) -> SyntheticData:
    """Read a ``synthetic.pt`` artifact (as logged by every distill stage) back, with ``weights_only``."""
    saved = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or "x" not in saved or "y" not in saved:
        raise ValueError(f"{path} is not a deepscope synthetic set (expected a dict with x and y)")
    return SyntheticData.from_dict(saved)


def plain_entries(values: dict[str, Any]) -> dict[str, Any]:
    """The entries a weights_only checkpoint can hold (the others are left out)."""
    from .plain import is_plain

    return {k: v for k, v in values.items() if is_plain(v)}
