"""Shared fixtures: a host with the standard and impressions plugins, and tiny task sequences."""

from __future__ import annotations

import deepscope_standard
import pytest

import deepscope_impressions
from deepscope import structure_component
from deepscope.testing import make_host


@pytest.fixture(scope="session")
def host():
    return make_host(deepscope_standard, deepscope_impressions)


@pytest.fixture(scope="session")
def build_data(host):
    def build(table: dict):
        spec, issues = structure_component(host.registry, "dataset", table, "$.data")
        assert not issues, issues
        return spec.build()

    return build


BASE = {"use": "fashion-mnist-sample", "subset": 60, "test_subset": 30}


@pytest.fixture(scope="session")
def base():
    """A tiny base image dataset: 60 training and 30 test images of the embedded Fashion-MNIST sample."""
    return dict(BASE)


MLP = 'use = "supermask-mlp"\nwidths = [32]'

HEAD = """
[run]
name = "continual"
seed = 0
checkpoint_every_steps = 1

[data]
use = "permuted-tasks"
tasks = 4
base = { use = "fashion-mnist-sample", subset = 300, test_subset = 100, batch_size = 50 }

[model]
MODEL
extra_masks = 2
"""

SEED = """
[[stage]]
do = "train"
name = "seed"
use = "continual"
tasks = [0, 1]
lr = LR
epochs_per_task = 3
"""

IMPRESS = """
[[stage]]
do = "train"
name = "impress"
use = "continual"
method = "impress"
tasks = [2, 3]
basis = "BASIS"
num_masks = 2
optimizer = "adam"
lr = 0.05
epochs_per_task = 4
alpha_l1 = 0.005
"""


def continual_text(model=MLP, basis="heterogeneous", extra="", lr=0.01):
    """A 4-task permuted run: SupSup on tasks 0-1, ImpressLearn (k = 2) on tasks 2-3."""
    return HEAD.replace("MODEL", model) + SEED.replace("LR", str(lr)) + IMPRESS.replace("BASIS", basis) + extra


@pytest.fixture(scope="session")
def pipeline():
    return continual_text
