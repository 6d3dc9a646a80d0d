"""Config classes of the impressions components (attrs only: cheap to import, no torch)."""

from __future__ import annotations

from typing import Literal, Optional

import attrs

from deepscope import (ConfigError, DatasetConfig, ModelConfig, ProbeConfig, TrainerConfig, component_param, in_range,
                       non_negative, param, positive)

Selection = Literal["topk-abs", "topk", "threshold"]


def _task_list(instance, attribute, value) -> None:
    if value is None:
        return
    if not value or len(set(value)) != len(value) or min(value) < 0:
        raise ValueError(f"'{attribute.name}' must be a non-empty list of distinct task indices >= 0, e.g. [0, 1, 2]: "
                         f"{list(value)!r}")


# --------------------------------------------------------------------------- datasets


@attrs.define(kw_only=True)
class TaskSequenceConfig(DatasetConfig):
    """A sequence of tasks built from any registered image dataset (``base``)."""

    base: object = component_param("dataset", default={"use": "fashion-mnist"},
                                   doc="the image dataset every task is made from, e.g. { use = \"mnist\" }")
    tasks: int = param(5, doc="number of tasks (experiences)", validator=positive)
    seed: int = param(0, doc="seed of the task transforms (independent of [run] seed)")


@attrs.define(kw_only=True)
class PermutedConfig(TaskSequenceConfig):
    """Permuted tasks: task t applies one fixed pixel permutation, drawn from seed + t (SupSup's PermutedMNIST)."""

    identity_first: bool = param(False, doc="task 0 keeps the identity permutation (the base data itself)")


@attrs.define(kw_only=True)
class RotatedConfig(TaskSequenceConfig):
    """Rotated tasks: task t rotates every image by t * angle_step degrees (task 0 is the base data)."""

    angle_step: Optional[float] = param(None, doc="degrees between consecutive tasks (default: 360 / tasks)")


@attrs.define(kw_only=True)
class SplitConfig(TaskSequenceConfig):
    """Split tasks: disjoint groups of classes per task, labels remapped to 0..classes_per_task-1."""

    tasks: int = param(5, doc="number of tasks (tasks * classes_per_task <= the base's classes)", validator=positive)
    classes_per_task: int = param(2, doc="classes in each task (the head's width)", validator=positive)
    order: Literal["natural", "random"] = param(
        "natural", doc="'natural': classes 0,1 | 2,3 | ...; 'random': a class order drawn from seed")


def _base_shape(config):
    base = config.base
    return base.component.data_shape(base.config) if base is not None else None


def permuted_shape(config):
    shape = _base_shape(config)
    return attrs.evolve(shape, num_tasks=config.tasks, train_counts=None, test_counts=None) if shape else None


def split_shape(config):
    shape = _base_shape(config)
    if shape is None:
        return None
    need = config.tasks * config.classes_per_task
    if need > shape.num_classes:
        raise ConfigError(f"{config.tasks} tasks of {config.classes_per_task} classes need {need} classes but "
                          f"{shape.name} has {shape.num_classes}; lower tasks or classes_per_task", key="tasks")
    return attrs.evolve(shape, num_classes=config.classes_per_task, num_tasks=config.tasks, train_counts=None,
                        test_counts=None)


# --------------------------------------------------------------------------- models


@attrs.define(kw_only=True)
class SupermaskConfig(ModelConfig):
    """Fixed signed-constant weights; each task (or mask slot) owns real scores whose top-k is its mask."""

    density: float = param(0.5, doc="fraction of each layer's weights a mask KEEPS (SupSup calls it `sparsity`)",
                           validator=in_range(0.0, 1.0, low_open=True))
    selection: Selection = param(
        "topk-abs", doc="mask rule: 'topk-abs' top-k of |scores| (RAIVNLab), 'topk' top-k of scores (ImpressLearn "
                        "fork), 'threshold' scores >= 0 (SupSup notebook; density unused)")
    extra_masks: int = param(0, doc="mask slots beyond one per task, for homogeneous or random bases",
                             validator=non_negative)
    gain: float = param(2.0 ** 0.5, doc="signed-constant magnitude gain / sqrt(fan_in) (ReLU gain)",
                        validator=positive)
    outputs: Optional[int] = param(None, doc="output units (default: the data's classes; SupSup's notebook: 100)",
                                   validator=positive)

    def check(self, shape) -> None:
        if self.outputs is not None and self.outputs < shape.num_classes:
            raise ConfigError(f"outputs = {self.outputs} is fewer than the {shape.num_classes} classes of "
                              f"{shape.name}; leave it unset or raise it", key="outputs")


@attrs.define(kw_only=True)
class SupermaskMLPConfig(SupermaskConfig):
    """Bias-free fully connected ReLU network (SupSup's FC 784-300-300-10 and its variants)."""

    widths: list[int] = param(attrs.Factory(lambda: [300, 300]), doc="hidden layer widths")


@attrs.define(kw_only=True)
class SupermaskLeNetConfig(SupermaskConfig):
    """LeNet-style CNN: conv 5x5 (channels) with max-pool, then FC (widths), per-task non-affine BatchNorm."""

    channels: list[int] = param(attrs.Factory(lambda: [6, 16]), doc="channels of the 5x5 conv layers")
    widths: list[int] = param(attrs.Factory(lambda: [120, 84]), doc="hidden FC widths")


@attrs.define(kw_only=True)
class SupermaskResNetConfig(SupermaskConfig):
    """Reduced ResNet-18 (GEM / SupSup's GEMResNet18) of masked convs with per-task non-affine BatchNorm."""

    width: int = param(20, doc="channels of the first stage (doubled at each later stage; GEM: 20)",
                       validator=positive)
    blocks: list[int] = param(attrs.Factory(lambda: [2, 2, 2, 2]), doc="basic blocks per stage")


# --------------------------------------------------------------------------- trainer


@attrs.define(kw_only=True)
class ContinualConfig(TrainerConfig):
    """Learn tasks one after another; after each, evaluate every task seen so far (a row of the accuracy matrix)."""

    method: Literal["supsup", "impress"] = param(
        "supsup", doc="'supsup': learn one mask per task; 'impress': freeze weights and a basis of masks, learn "
                      "only per-layer coefficients alpha")
    tasks: Optional[list[int]] = param(None, doc="tasks to learn, in order (default: every task of the data)",
                                       validator=_task_list)
    epochs_per_task: int = param(1, doc="epochs on each task", validator=positive)
    optimizer: Literal["rmsprop", "adam", "sgd"] = param("rmsprop", doc="optimizer of the scores or alphas")
    lr: float = param(1e-4, doc="learning rate (SupSup MNIST: 1e-4 for masks; the fork: 1e-3 for alphas)",
                      validator=positive)
    momentum: float = param(0.0, doc="sgd momentum", validator=non_negative)
    weight_decay: float = param(0.0, doc="weight decay of the learned scores or alphas", validator=non_negative)
    batch_size: Optional[int] = param(None, doc="training batch size (default: the dataset's)", validator=positive)
    basis: Literal["heterogeneous", "homogeneous", "random"] = param(
        "heterogeneous", doc="impress: masks of earlier tasks; several masks of one task (basis_task); or random "
                             "masks of the model's density")
    num_masks: int = param(5, doc="impress: k, the basis size", validator=positive)
    basis_tasks: Optional[list[int]] = param(
        None, doc="heterogeneous: the tasks whose masks form the basis (default: the first num_masks learned)",
        validator=_task_list)
    basis_task: int = param(0, doc="homogeneous: the task whose repeated masks form the basis", validator=non_negative)
    mask_lr: Optional[float] = param(None, doc="homogeneous: learning rate of the repeated masks (default: lr)",
                                     validator=positive)
    alpha_l1: float = param(0.0, doc="impress: penalty alpha_l1 * (||alpha||_1 - 1)^2 per layer (the fork's al)",
                            validator=non_negative)
    eval_examples: Optional[int] = param(None, doc="test examples per task for the accuracy matrix (default: all)",
                                         validator=positive)


# --------------------------------------------------------------------------- probes


@attrs.define(kw_only=True)
class ContinualAccuracyConfig(ProbeConfig):
    """The accuracy matrix R[i, j] (after learning the i-th task, on task j), its summaries and per-task overhead."""

    examples: Optional[int] = param(None, doc="test examples per task for the final row (default: all)",
                                    validator=positive)
    plot: bool = param(True, doc="log a heat map of the accuracy matrix")


@attrs.define(kw_only=True)
class TaskInferenceConfig(ProbeConfig):
    """Infer the task from unlabeled test images, then classify with the inferred task's mask."""

    method: Literal["oneshot-entropy", "min-entropy"] = param(
        "oneshot-entropy", doc="'oneshot-entropy': SupSup's one gradient of the output entropy with respect to "
                               "superposition coefficients (one forward); 'min-entropy': the task whose own mask "
                               "gives the lowest entropy (one forward per task)")
    examples: int = param(1, doc="images per inference trial (SupSup's notebook: 1)", validator=positive)
    trials: int = param(50, doc="inference trials per task", validator=positive)
    batch: int = param(128, doc="task-inferred accuracy: each test batch is classified with the task inferred "
                                "from its first `examples` images (the SupSup paper's GN protocol)",
                       validator=positive)
    eval_examples: Optional[int] = param(None, doc="test examples per task for the task-inferred accuracy",
                                         validator=positive)
    seed: int = param(0, doc="seed of the trial images")


@attrs.define(kw_only=True)
class MaskOverlapConfig(ProbeConfig):
    """Jaccard overlap between the learned masks, and accuracy of each mask on tasks it was not learned for."""

    examples: int = param(1000, doc="test examples per task for the foreign-task accuracy", validator=positive)
