"""Dataset parameters (attrs only; no torch here) and their registration.

Every dataset shares the loader parameters of :class:`DataConfig`; the full
datasets add where to find the files. Implementations live in
``deepscope_standard.datasets`` and are imported on first use.
"""

from __future__ import annotations

from typing import Literal, Optional

import attrs

from deepscope import ConfigError, DataShape, param, positive

_IMPL = "deepscope_standard.datasets"


def distinct_class_indices(instance, attribute, value) -> None:
    """Validator: a non-empty list of distinct, non-negative class indices (None: every class)."""
    if value is None:
        return
    if not value or len(set(value)) != len(value) or min(value) < 0:
        raise ValueError(f"'{attribute.name}' must be a non-empty list of distinct class indices >= 0, "
                         f"e.g. [3, 7]: {list(value)!r}")


@attrs.define(kw_only=True)
class DataConfig:
    """Loader parameters every standard dataset accepts."""

    batch_size: int = param(128, doc="training batch size", validator=positive)
    test_batch_size: int = param(1000, doc="evaluation batch size", validator=positive)
    subset: Optional[int] = param(None, doc="use only N training examples (see subset_mode)", validator=positive)
    test_subset: Optional[int] = param(None, doc="use only N test examples (see subset_mode)", validator=positive)
    subset_mode: Literal["first", "balanced"] = param(
        "first", doc="'first': the first N examples; 'balanced': the first N // classes of every class")
    classes: Optional[list[int]] = param(
        None, doc="keep only these classes (train and test), relabelled 0..k-1 in the order given, e.g. [3, 7] "
                  "for a binary task; subsets and statistics then see only the kept classes",
        validator=distinct_class_indices)
    augment: bool = param(False, doc="random crop (padding 4) and horizontal flip of training images")
    zca: Literal["none", "kornia", "relative"] = param(
        "none", doc="ZCA whitening inside the model, fitted on the (normalized) training split: kornia (eps "
                    "added to the eigenvalues, as MTT) or relative (zca_reg x the mean eigenvalue, as RaT-BPTT)")
    zca_reg: float = param(0.1, doc="the ZCA regularisation (kornia: eps; relative: fraction of the mean "
                                    "eigenvalue)", validator=positive)
    num_workers: int = param(0, doc="DataLoader worker processes", validator=attrs.validators.ge(0))

    def check(self, shape) -> None:
        check_subsets(self, shape)


@attrs.define(kw_only=True)
class SampleConfig(DataConfig):
    """The Fashion-MNIST sample embedded in the package: 5,000 train / 1,000 test, class-balanced."""

    pad_to_32: bool = param(False, doc="zero-pad the 28x28 images to 32x32 (for CIFAR-shaped models)")


@attrs.define(kw_only=True)
class FullDataConfig(DataConfig):
    """A full dataset read from disk (``root``, else ``$DEEPSCOPE_DATA``)."""

    root: Optional[str] = param(None, doc="directory holding the data (default: $DEEPSCOPE_DATA)")
    download: bool = param(False, doc="download with torchvision when missing (needs internet)")


@attrs.define(kw_only=True)
class MnistLikeConfig(FullDataConfig):
    """A 28x28 grayscale dataset in torchvision's or the flat IDX layout."""

    pad_to_32: bool = param(False, doc="zero-pad the 28x28 images to 32x32 (for CIFAR-shaped models)")


#: name, loader, config class, doc, (channels, side, classes, train and test examples per class: known for the
#: class-balanced datasets, None where the split is unbalanced and the counts are left to the loader)
DATASETS = (
    ("fashion-mnist-sample", "load_fashion_mnist_sample", SampleConfig,
     "Fashion-MNIST sample shipped with the plugin (5k/1k real images, class-balanced)", (1, 28, 10, 500, 100)),
    ("fashion-mnist", "load_fashion_mnist", MnistLikeConfig,
     "Fashion-MNIST 60k/10k (flat IDX files, torchvision layout, or /usr/share/datasets/fashion-mnist)",
     (1, 28, 10, 6000, 1000)),
    ("mnist", "load_mnist", MnistLikeConfig, "MNIST 60k/10k (flat IDX files or torchvision layout)",
     (1, 28, 10, None, None)),
    ("cifar10", "load_cifar10", FullDataConfig, "CIFAR-10 50k/10k, 32x32 RGB (torchvision layout)",
     (3, 32, 10, 5000, 1000)),
    ("cifar100", "load_cifar100", FullDataConfig, "CIFAR-100 50k/10k, 32x32 RGB, fine labels (torchvision layout)",
     (3, 32, 100, 500, 100)),
    ("svhn", "load_svhn", FullDataConfig, "SVHN 73k/26k, 32x32 RGB (torchvision layout; augment never flips)",
     (3, 32, 10, None, None)),
)


def shape_of(name: str, channels: int, side: int, classes: int, train_per_class: int | None,
              test_per_class: int | None):
    """The dataset's shape as its config makes it (``pad_to_32``, ``classes``), known without loading it."""

    def shape(config) -> DataShape:
        padded = 32 if getattr(config, "pad_to_32", False) else side
        kept = len(config.classes) if config.classes is not None else classes
        if config.classes is not None and any(c >= classes for c in config.classes):
            raise ConfigError(f"classes = {list(config.classes)}: {name} has classes 0..{classes - 1}",
                              key="classes")
        counts = {split: (per_class,) * kept if per_class is not None else None
                  for split, per_class in (("train", train_per_class), ("test", test_per_class))}
        return DataShape(name, kept, (channels, padded, padded), train_counts=counts["train"],
                         test_counts=counts["test"])

    return shape


def subset_problem(n: int, mode: str, counts: tuple[int, ...], key: str) -> str | None:
    """Why ``n`` examples cannot be taken from a split with ``counts`` examples per class (None: they can).

    ``balanced`` takes the first ``n // k`` of every class and one more of the first ``n % k`` classes.
    """
    if n > sum(counts):
        return f"{key} = {n} but the split has only {sum(counts)} examples"
    if mode == "balanced":
        per_class, extra = divmod(n, len(counts))
        for c, have in enumerate(counts):
            want = per_class + (1 if c < extra else 0)
            if have < want:
                return f"a balanced subset of {n} needs {want} examples of class {c}, but the split has only {have}"
    return None


def check_subsets(config, shape) -> None:
    """``subset`` and ``test_subset`` against the split sizes the dataset declares (before loading it)."""
    for key, counts in (("subset", shape.train_counts), ("test_subset", shape.test_counts)):
        n = getattr(config, key)
        problem = subset_problem(n, config.subset_mode, counts, key) if n is not None and counts else None
        if problem:
            raise ConfigError(problem, key=key)


def register(register) -> None:
    for name, attr, config_cls, doc, (channels, side, classes, train, test) in DATASETS:
        register(name, f"{_IMPL}:{attr}", config_cls, doc=doc, shape=shape_of(name, channels, side, classes, train, test))
