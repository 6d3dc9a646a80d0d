"""Tiny data, a tiny MLP and pipelines for the rat-bptt tests (seconds on one CPU core)."""

from __future__ import annotations

from torch import nn

import deepscope_ratbptt
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
        register("tiny-mlp", lambda config, info: nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(),
                                                                nn.Linear(16, info.num_classes)), None)


def host(*extra):
    return make_host(deepscope_standard, deepscope_ratbptt, TinyPlugin(), *extra)


def pipeline(use: str = "rat-bptt", seed: int = 0, extra_stages: str = "", **params) -> str:
    defaults = {"meta_steps": 6, "unroll": 6, "window": 3, "real_batch": 20, "batch_per_class": 2,
                "inner_optim": "sgd", "inner_lr": 0.1, "lr": 0.01, "grid": False}
    if use == "rat-bptt":
        defaults["ipc"] = 2
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
use = "tiny-mlp"

[[stage]]
do = "distill"
use = "{use}"
name = "d"
{lines}
{extra_stages}
"""


def _toml(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)
