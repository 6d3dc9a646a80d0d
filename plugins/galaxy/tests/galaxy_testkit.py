"""Tiny data, a tiny network and pipelines for the galaxy tests (seconds on one CPU core)."""

from __future__ import annotations

from torch import nn

import deepscope_galaxy
import deepscope_standard
from deepscope import hookimpl
from deepscope.testing import make_host, tiny_data

CLASSES = 3


class TinyPlugin:
    @hookimpl
    def deepscope_register_datasets(self, register):
        register("tiny", lambda config: tiny_data(n_train=60, n_test=30, shape=(1, 6, 6), classes=CLASSES, seed=4),
                 None)

    @hookimpl
    def deepscope_register_models(self, register):
        register("tiny-cnn", lambda config, info: nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(144, info.num_classes)), None)


def host(*extra):
    return make_host(deepscope_standard, deepscope_galaxy, TinyPlugin(), *extra)


EXPERTS = "{ num = 2, epochs = 4, batch = 20 }"


def pipeline(use: str = "mtt", seed: int = 0, extra_stages: str = "", experts: str = EXPERTS, **params) -> str:
    defaults = {"ipc": 2, "syn_steps": 3, "iterations": 6, "lr_img": 1.0, "lr_teacher": 0.01, "grid": False}
    if use == "mtt":
        defaults.update(expert_epochs=1, max_start_epoch=3, lr_lr=1e-5)
    else:
        defaults.update(max_start_epoch=3, lr_lr=0.01)
    defaults.update(params)
    lines = "\n".join(f"{k} = {_toml(v)}" for k, v in defaults.items())
    return f"""
[run]
name = "t"
seed = {seed}
checkpoint_every_steps = 2

[data]
use = "tiny"

[model]
use = "tiny-cnn"

[[stage]]
do = "distill"
use = "{use}"
name = "d"
experts = {experts}
{lines}
{extra_stages}
"""


def _toml(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)
