"""Config base classes, one per component kind.

A pruner's config must subclass :class:`PrunerConfig` (the prune stage reads the
density from it) and an attack's :class:`AttackConfig` (the attack stage reads
how many examples to attack and how); registration checks both. The other
bases are empty and optional: subclass them to say what a class is for. All
are keyword-only so subclasses may add required fields. No torch import here.
"""

from __future__ import annotations

from typing import Optional

import attrs

from .params import param, positive


@attrs.define(kw_only=True)
class PrunerConfig:
    """Parameters every pruner shares: how much to prune, and what that amount means."""

    compression: Optional[float] = param(None, doc="1 / density, > 1 (give this or sparsity)")
    sparsity: Optional[float] = param(None, doc="fraction of prunable weights removed, in [0, 1) (or compression)")
    target: str = param("direct", doc="'direct': the mask has this sparsity; 'effective': the mask's "
                                      "effective sparsity does (needs the sparsity plugin)")

    def __attrs_post_init__(self):
        if (self.compression is None) == (self.sparsity is None):
            raise ValueError("give exactly one of 'compression' and 'sparsity'"
                             f" (got compression={self.compression}, sparsity={self.sparsity})")
        if self.compression is not None and not self.compression >= 1:
            raise ValueError(f"'compression' must be >= 1: {self.compression}")
        if self.sparsity is not None and not 0 <= self.sparsity < 1:
            raise ValueError(f"'sparsity' must be in [0, 1): {self.sparsity}")

    @property
    def density(self) -> float:
        """Fraction of prunable weights kept."""
        if self.compression is not None:
            return 1.0 / self.compression
        return 1.0 - float(self.sparsity)


@attrs.define(kw_only=True)
class AttackConfig:
    """Parameters the attack stage reads; attacks add their own (eps, steps...)."""

    n_examples: Optional[int] = param(None, doc="attack the first N test examples (default: all)",
                                      validator=positive)
    batch_size: int = param(256, doc="examples per attack batch", validator=positive)
    targeted: bool = param(False, doc="targeted attack towards a random other class (seeded)")
    draws: int = param(1, doc="for stochastic models: evaluate every example on this many noise draws and "
                              "report the mean and the worst case over draws", validator=positive)


@attrs.define(kw_only=True)
class TrainerConfig:
    """Base of trainer configs (optional)."""


@attrs.define(kw_only=True)
class DistillerConfig:
    """Base of distiller configs (optional)."""


@attrs.define(kw_only=True)
class ProbeConfig:
    """Base of probe configs (optional)."""


@attrs.define(kw_only=True)
class DatasetConfig:
    """Base of dataset configs (optional)."""


@attrs.define(kw_only=True)
class ModelConfig:
    """Base of model configs (optional)."""


__all__ = ["AttackConfig", "DatasetConfig", "DistillerConfig", "ModelConfig", "ProbeConfig", "PrunerConfig",
           "TrainerConfig"]
