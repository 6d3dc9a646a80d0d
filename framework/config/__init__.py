"""Pipelines from TOML: tomli, then cattrs into attrs classes, in two phases.

Phase 1 structures the skeleton (``[run]``, ``[data]``, ``[model]``,
``[[stage]]``); phase 2 checks each component's own parameters against the
config class its plugin registered. Every problem is collected and reported
together as ``file: $.stage[1].compression: must be > 1 (got 0.5)``.
Nothing here imports torch, so ``deepscope validate`` stays light.

One job per module: ``values`` (typed TOML values and messages),
``components`` (a component and its parameters), ``pipeline`` (the schema and
the stage graph), ``files`` (reading and writing TOML).
"""

from .components import ComponentSpec, structure_component, structure_config
from .files import dump_toml, load_pipeline, parse_pipeline, read_pipeline_file, read_toml
from .pipeline import (REAL_DATA, STAGE_RESERVED, SYNTHETIC, PeriodicProbe, Pipeline, RunSpec, StageSpec,
                       build_pipeline, fingerprint_resolved)
from .values import CONVERTER, article, close_match, describe, make_converter

__all__ = [
    "CONVERTER", "ComponentSpec", "PeriodicProbe", "Pipeline", "REAL_DATA", "RunSpec", "STAGE_RESERVED",
    "SYNTHETIC", "StageSpec", "article", "build_pipeline", "close_match", "describe", "dump_toml",
    "fingerprint_resolved", "load_pipeline", "make_converter", "parse_pipeline", "read_pipeline_file",
    "read_toml", "structure_component", "structure_config",
]
