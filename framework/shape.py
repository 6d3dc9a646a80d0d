"""What a dataset will look like, known from its config alone: shape, classes, tasks (no torch, no loading).

``deepscope validate`` uses it to check models and stage components against the data
before anything is loaded: a dataset registers ``shape=fn`` (``fn(config) -> DataShape``),
and any component config may define ``check(self, shape)``, raising ``ValueError`` (or
``deepscope.ConfigError(..., key="param")``) when it cannot work with such data.
"""

from __future__ import annotations

import attrs


class InputShape:
    """Named views of ``input_shape`` (channels, height, width), shared by DataShape and DatasetInfo."""

    input_shape: tuple[int, int, int]

    @property
    def channels(self) -> int:
        return self.input_shape[0]

    @property
    def height(self) -> int:
        return self.input_shape[1]

    @property
    def width(self) -> int:
        return self.input_shape[2]

    @property
    def num_inputs(self) -> int:
        c, h, w = self.input_shape
        return c * h * w


@attrs.define(frozen=True)
class DataShape(InputShape):
    """Shape (channels, height, width), class count and task count of a dataset's inputs."""

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    num_tasks: int = 1
    #: examples per class of the training and test splits, when the dataset knows them without loading
    train_counts: tuple[int, ...] | None = None
    test_counts: tuple[int, ...] | None = None
