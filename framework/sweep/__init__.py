"""Sweeps: a ``[sweep]`` table expands one pipeline into many resolved, hashed points.

``deepscope sweep FILE`` validates every point before anything runs, records
them in a sweep directory (``sweep.json``), creates the MLflow store, the
experiment and one parent run, and hands the points to an executor (``inline``,
``local`` or ``slurm``; plugins add more through ``deepscope_register_executors``).
Nothing here is imported until used (``deepscope --help`` stays light).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "SweepPoint": "deepscope.sweep.expand",
    "expand_sweep": "deepscope.sweep.expand",
    "SweepSpec": "deepscope.sweep.spec",
    "parse_sweep": "deepscope.sweep.spec",
    "SweepRecord": "deepscope.sweep.record",
    "plan_sweep": "deepscope.sweep.submit",
    "submit_sweep": "deepscope.sweep.submit",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'deepscope.sweep' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = list(_LAZY)
