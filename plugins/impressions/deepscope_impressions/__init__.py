"""deepscope-impressions: continual learning with supermasks on a fixed random backbone.

SupSup (Wortsman et al. 2020) learns one binary mask per task; ImpressLearn (Bhardwaj, Kempe,
Vysogorets, Teng & Ezekwem, arXiv:2210.01987) freezes a few masks ("impressions") and solves each
new task by learning only per-layer coefficients over them. Task sequences (permuted, rotated,
split) are built over any registered image dataset. Importing this module is cheap: factories
are "module:attr" strings loaded on first use.
"""

from __future__ import annotations

from deepscope import hookimpl

from .configs import (ContinualAccuracyConfig, ContinualConfig, MaskOverlapConfig, PermutedConfig, RotatedConfig,
                      SplitConfig, SupermaskLeNetConfig, SupermaskMLPConfig, SupermaskResNetConfig,
                      TaskInferenceConfig)

_DATA = "deepscope_impressions.datasets"


@hookimpl
def deepscope_register_datasets(register):
    register("permuted-tasks", f"{_DATA}:make_permuted", PermutedConfig,
             doc="task t permutes the pixels of a base image dataset with a permutation drawn from seed + t",
             shape="deepscope_impressions.configs:permuted_shape")
    register("rotated-tasks", f"{_DATA}:make_rotated", RotatedConfig,
             doc="task t rotates the base images by t * angle_step degrees (task 0: the base data)",
             shape="deepscope_impressions.configs:permuted_shape")
    register("split-tasks", f"{_DATA}:make_split", SplitConfig,
             doc="disjoint class groups of a base dataset, one per task, labels remapped to 0..k-1",
             shape="deepscope_impressions.configs:split_shape")


@hookimpl
def deepscope_register_models(register):
    register("supermask-mlp", "deepscope_impressions.supermask:make_mlp", SupermaskMLPConfig,
             doc="bias-free FC network of fixed signed-constant weights with per-task supermasks and alphas")
    register("supermask-lenet", "deepscope_impressions.supermask:make_lenet", SupermaskLeNetConfig,
             doc="LeNet-style CNN of fixed signed-constant weights, per-task supermasks and non-affine BatchNorm")
    register("supermask-resnet", "deepscope_impressions.supermask:make_resnet", SupermaskResNetConfig,
             doc="reduced ResNet-18 (GEMResNet18, width 20) of fixed signed-constant weights, per-task supermasks "
                 "and non-affine BatchNorm (split CIFAR-100)")


@hookimpl
def deepscope_register_trainers(register):
    register("continual", "deepscope_impressions.trainer:Continual", ContinualConfig,
             doc="learn tasks in order (SupSup masks or ImpressLearn alphas over a basis); evaluate all seen tasks "
                 "after each", provides=("trained",))


@hookimpl
def deepscope_register_probes(register):
    register("continual-accuracy", "deepscope_impressions.probes:ContinualAccuracy", ContinualAccuracyConfig,
             doc="accuracy matrix, average accuracy, forgetting, backward transfer, parameters per task")
    register("task-inference", "deepscope_impressions.probes:TaskInference", TaskInferenceConfig,
             doc="infer the task from unlabeled images (SupSup one-shot entropy gradient, or min entropy)")
    register("mask-overlap", "deepscope_impressions.probes:MaskOverlap", MaskOverlapConfig,
             doc="Jaccard overlap between learned masks and each mask's accuracy on foreign tasks")
