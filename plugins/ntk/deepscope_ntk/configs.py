"""Config classes of the ntk components (attrs only: cheap to import)."""

from __future__ import annotations

import math
from typing import Literal

import attrs

from deepscope import ModelConfig, non_negative, param, positive


@attrs.define(kw_only=True)
class NTKMLPConfig(ModelConfig):
    """Fully connected ReLU network in the NTK parameterization (neural-tangents' stax Dense/Relu)."""

    width: int = param(512, doc="units per hidden layer", validator=positive)
    depth: int = param(1, doc="hidden layers (0: a linear model)", validator=non_negative)
    w_std: float = param(math.sqrt(2.0), doc="weight scale: a layer computes w_std / sqrt(fan_in) * W x + b_std * b",
                         validator=positive)
    b_std: float = param(0.1, doc="bias scale (0: no bias contribution)", validator=non_negative)
