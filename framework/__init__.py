"""deepscope's public API: everything a plugin needs, and nothing private.

Plugins import from here only. Names that need torch are loaded on first use,
so ``import framework`` (and ``deepscope --help``) stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .bases import AttackConfig, PrunerConfig
from .errors import (ConfigError, ConfigIssue, DataError, DeepscopeError, DuplicateComponentError,
                     PluginLoadError, UnknownComponentError)
from .hookspecs import hookimpl
from .params import component_param, in_range, non_negative, param, positive

__version__ = "0.1.0"

_LAZY = {
    "DataBundle": "framework.data",
    "DatasetInfo": "framework.data",
    "SyntheticData": "framework.data",
    "Network": "framework.network",
    "Normalize": "framework.network",
    "apply_masks": "framework.network",
    "prunable_parameters": "framework.network",
    "mask_sparsity": "framework.network",
    "RunState": "framework.state",
    "StageContext": "framework.state",
    "ComponentSpec": "framework.config",
    "Pipeline": "framework.config",
    "parse_pipeline": "framework.config",
    "load_pipeline": "framework.config",
    "PluginHost": "framework.plugins",
    "get_host": "framework.plugins",
    "run_pipeline": "framework.runner",
    "RunResult": "framework.runner",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'framework' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AttackConfig", "ConfigError", "ConfigIssue", "DataError", "DeepscopeError", "DuplicateComponentError",
    "PluginLoadError", "PrunerConfig", "UnknownComponentError", "component_param", "hookimpl", "in_range",
    "non_negative", "param", "positive", *_LAZY,
]
