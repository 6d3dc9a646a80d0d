"""Task sequences (permuted, rotated, split) over any registered image dataset.

The base images are held once; each task is a view that transforms whole batches
(``batch(indices)``), so ten permuted copies of Fashion-MNIST cost no extra memory.
"""

from __future__ import annotations

import math

import attrs
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from deepscope import DataBundle, Task


class TaskImages(Dataset):
    """Base images (uint8 or float in [0, 1]) with labels, seen through one task's batch transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None, label_map: torch.Tensor | None = None,
                 keep: torch.Tensor | None = None):
        self.images, self.labels = images, labels
        self.transform, self.label_map = transform, label_map
        self.keep = keep  # indices of the base examples this task uses (split tasks)

    def __len__(self) -> int:
        return int(self.labels.shape[0] if self.keep is None else self.keep.shape[0])

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        if self.keep is not None:
            index = self.keep[index]
        x = self.images[index]
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        y = self.labels[index]
        if self.label_map is not None:
            y = self.label_map[y]
        return (self.transform(x) if self.transform is not None else x), y

    def __getitem__(self, index):
        x, y = self.batch([index])
        return x[0], y[0]

    def __getitems__(self, indices):
        return list(zip(*self.batch(indices)))


def base_tensors(bundle: DataBundle, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's images without a float copy when the base keeps uint8 (the standard datasets do)."""
    dataset = bundle.train if split == "train" else bundle.test
    images, labels = getattr(dataset, "images", None), getattr(dataset, "labels", None)
    if isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor):
        return images, labels.long()
    return bundle.tensors(split)


def task_permutation(seed: int, task: int, num_pixels: int, identity_first: bool = False) -> torch.Tensor:
    """The pixel permutation of ``task``: a function of (seed, task) alone, drawn from seed + task."""
    if identity_first and task == 0:
        return torch.arange(num_pixels)
    return torch.randperm(num_pixels, generator=torch.Generator().manual_seed(int(seed) + int(task)))


def permute_pixels(perm: torch.Tensor):
    def transform(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.reshape(n, c, h * w)[:, :, perm].reshape(n, c, h, w)

    return transform


def rotate(degrees: float):
    """Rotate batches about the image centre (bilinear, zeros outside), exactly the identity at 0 degrees."""
    theta = math.radians(degrees)
    matrix = torch.tensor([[math.cos(theta), -math.sin(theta), 0.0], [math.sin(theta), math.cos(theta), 0.0]])

    def transform(x: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(matrix.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    return transform if degrees % 360 else None


def sequence_bundle(base: DataBundle, name: str, tasks: list[Task], num_classes: int) -> DataBundle:
    """The sequence as one bundle: task 0 is its default train/test pair, ``tasks`` holds all of them."""
    info = attrs.evolve(base.info, name=name, num_classes=num_classes, num_tasks=len(tasks),
                        class_names=base.info.class_names if num_classes == base.info.num_classes else ())
    return DataBundle(tasks[0].train, tasks[0].test, info, batch_size=base.batch_size,
                      test_batch_size=base.test_batch_size, num_workers=base.num_workers, tasks=tuple(tasks))


def _base(config) -> DataBundle:
    return config.base.build()


def make_permuted(config) -> DataBundle:
    base = _base(config)
    train, test = base_tensors(base, "train"), base_tensors(base, "test")
    pixels = base.info.height * base.info.width
    tasks = []
    for t in range(config.tasks):
        transform = permute_pixels(task_permutation(config.seed, t, pixels, config.identity_first))
        tasks.append(Task(TaskImages(*train, transform), TaskImages(*test, transform), base.info.num_classes,
                          name=f"permutation {t}"))
    return sequence_bundle(base, f"permuted-{base.info.name}", tasks, base.info.num_classes)


def make_rotated(config) -> DataBundle:
    base = _base(config)
    train, test = base_tensors(base, "train"), base_tensors(base, "test")
    step = config.angle_step if config.angle_step is not None else 360.0 / config.tasks
    tasks = []
    for t in range(config.tasks):
        transform = rotate(t * step)
        tasks.append(Task(TaskImages(*train, transform), TaskImages(*test, transform), base.info.num_classes,
                          name=f"rotation {t * step:g} deg"))
    return sequence_bundle(base, f"rotated-{base.info.name}", tasks, base.info.num_classes)


def split_classes(config, num_classes: int) -> list[list[int]]:
    """The classes of each task, in the order that maps them to labels 0..k-1."""
    order = list(range(num_classes))
    if config.order == "random":
        order = torch.randperm(num_classes, generator=torch.Generator().manual_seed(config.seed)).tolist()
    k = config.classes_per_task
    return [order[t * k:(t + 1) * k] for t in range(config.tasks)]


def make_split(config) -> DataBundle:
    base = _base(config)
    num = base.info.num_classes
    if config.tasks * config.classes_per_task > num:
        from deepscope import ConfigError

        raise ConfigError(f"{config.tasks} tasks of {config.classes_per_task} classes need "
                          f"{config.tasks * config.classes_per_task} classes but {base.info.name} has {num}; "
                          "lower tasks or classes_per_task", key="tasks")
    train, test = base_tensors(base, "train"), base_tensors(base, "test")
    tasks = []
    for t, classes in enumerate(split_classes(config, num)):
        label_map = torch.full((num,), -1, dtype=torch.long)
        label_map[torch.tensor(classes)] = torch.arange(len(classes))
        views = [TaskImages(images, labels, None, label_map, torch.nonzero(label_map[labels] >= 0).flatten())
                 for images, labels in (train, test)]
        names = base.info.class_names
        tasks.append(Task(views[0], views[1], len(classes),
                          name=" / ".join(names[c] if names else str(c) for c in classes)))
    return sequence_bundle(base, f"split-{base.info.name}", tasks, config.classes_per_task)
