"""deepscope's public API: everything a plugin needs, and nothing private.

Plugins import from here only (plus the public submodules ``deepscope.contracts``,
``deepscope.cache`` and ``deepscope.testing``). Names that need torch are loaded
on first use, so ``import deepscope`` (and ``deepscope --help``) stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .bases import (AttackConfig, DatasetConfig, DistillerConfig, ModelConfig, ProbeConfig, PrunerConfig,
                    TrainerConfig)
from .errors import (ConfigError, ConfigIssue, DataError, DeepscopeError, DuplicateComponentError,
                     PluginLoadError, RunFailed, UnknownComponentError)
from .hookspecs import hookimpl
from .params import component_param, in_range, non_negative, param, positive
from .shape import DataShape

__version__ = "0.1.0"

_LAZY = {
    "DataBundle": "deepscope.data",
    "DatasetInfo": "deepscope.data",
    "SyntheticData": "deepscope.data",
    "Task": "deepscope.data",
    "load_synthetic": "deepscope.data",
    "task_key": "deepscope.data",
    "LinearPreprocess": "deepscope.network",
    "Network": "deepscope.network",
    "PRUNABLE_TYPES": "deepscope.network",
    "build_network": "deepscope.network",
    "Normalize": "deepscope.network",
    "apply_masks": "deepscope.network",
    "prunable_parameters": "deepscope.network",
    "mask_sparsity": "deepscope.network",
    "RunState": "deepscope.state",
    "run_probe": "deepscope.state",
    "ComponentKind": "deepscope.kinds",
    "StageKind": "deepscope.kinds",
    "StageSpec": "deepscope.config",
    "build_pipeline": "deepscope.config",
    "Cache": "deepscope.cache",
    "save_tensors": "deepscope.cache",
    "SavedTensorMeter": "deepscope.memory",
    "time_and_peak_memory": "deepscope.memory",
    "load_tensors": "deepscope.cache",
    "Masks": "deepscope.contracts",
    "StageContext": "deepscope.state",
    "ComponentSpec": "deepscope.config",
    "Pipeline": "deepscope.config",
    "parse_pipeline": "deepscope.config",
    "structure_component": "deepscope.config",
    "structure_config": "deepscope.config",
    "load_pipeline": "deepscope.config",
    "PluginHost": "deepscope.plugins",
    "get_host": "deepscope.plugins",
    "run_pipeline": "deepscope.runner",
    "RunResult": "deepscope.runner",
}


#: public submodules, importable as attributes (``deepscope.contracts.Trainer``)
_SUBMODULES = ("cache", "contracts", "testing")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return import_module(f"deepscope.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'deepscope' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AttackConfig", "DataShape", "DatasetConfig", "DistillerConfig", "ModelConfig", "ProbeConfig", "TrainerConfig", "ConfigError", "ConfigIssue", "DataError", "DeepscopeError", "DuplicateComponentError",
    "PluginLoadError", "PrunerConfig", "RunFailed", "UnknownComponentError", "component_param", "hookimpl", "in_range",
    "non_negative", "param", "positive", *_LAZY,
]
