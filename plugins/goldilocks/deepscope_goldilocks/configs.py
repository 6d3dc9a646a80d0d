"""Config classes of the goldilocks components (attrs only: cheap to import)."""

from __future__ import annotations

from typing import Literal, Optional

import attrs

from deepscope import DataShape, in_range, non_negative, param, positive

Dtype = Literal["float32", "float64"]
Hvp = Literal["forward-over-reverse", "double-backprop"]
Split = Literal["train", "test"]


@attrs.define
class CurvatureConfig:
    subspace_dim: int = param(50, doc="d: dimension of the random subspace of the exact d x d Hessian",
                              validator=positive)
    subspace_seed: int = param(0, doc="seed of the random subspace (keep fixed to compare runs)")
    n_subspaces: int = param(1, doc="independent random subspaces averaged (>= 2 also logs standard errors)",
                             validator=positive)
    n_examples: int = param(1000, doc="examples the loss is averaged over (first n of the split)",
                            validator=positive)
    split: Split = param("train", doc="which split the examples come from")
    batch_size: int = param(500, doc="examples per forward pass (memory only; results do not change)",
                            validator=positive)
    dtype: Dtype = param("float32", doc="precision (float64 measures on a double copy of the model)")
    probes: int = param(100, doc="Rademacher probes of the full-space Hutchinson estimates (0: skip)",
                        validator=non_negative)
    probe_seed: int = param(1, doc="seed of the Hutchinson probes and the Lanczos start vector")
    lanczos_steps: int = param(20, doc="Lanczos steps for the sharpness (most positive eigenvalue; 0: skip)",
                               validator=non_negative)
    per_layer: bool = param(False, doc="also measure the subspace curvature of each parameter tensor alone")
    hvp: Hvp = param("forward-over-reverse", doc="Hessian-vector product engine")
    chunk_size: Optional[int] = param(25, doc="vectors per batched HVP pass (lower it to save memory; "
                                      "none: all at once)", validator=positive)

    def __attrs_post_init__(self):
        if self.probes == 1:
            raise ValueError("'probes' must be 0 (skip) or >= 2 (a standard error needs two samples)")


@attrs.define
class GaussNewtonConfig:
    subspace_dim: int = param(50, doc="d: dimension of the random subspace", validator=positive)
    subspace_seed: int = param(0, doc="seed of the random subspace")
    n_subspaces: int = param(1, doc="independent random subspaces averaged (>= 2 also logs standard errors)",
                             validator=positive)
    n_examples: int = param(1000, doc="examples the loss is averaged over", validator=positive)
    split: Split = param("train", doc="which split the examples come from")
    batch_size: int = param(500, doc="examples per forward pass (memory only)", validator=positive)
    dtype: Dtype = param("float32", doc="precision of the measurement")
    hvp: Hvp = param("forward-over-reverse", doc="Hessian-vector product engine")
    chunk_size: Optional[int] = param(25, doc="vectors per batched pass (lower it to save memory)",
                                      validator=positive)


@attrs.define
class SpectralDensityConfig:
    n_examples: int = param(1000, doc="examples the loss is averaged over (first n of the split)",
                            validator=positive)
    split: Split = param("train", doc="which split the examples come from")
    batch_size: int = param(500, doc="examples per forward pass (memory only)", validator=positive)
    dtype: Dtype = param("float32", doc="precision of the Hessian-vector products")
    hvp: Hvp = param("forward-over-reverse", doc="Hessian-vector product engine")
    lanczos_steps: int = param(80, doc="Lanczos steps per start vector (PyHessian: 100); exact moments up to "
                                       "degree 2m - 1", validator=positive)
    n_vectors: int = param(4, doc="Rademacher start vectors averaged (PyHessian: 1; >= 2 logs standard errors)",
                           validator=positive)
    seed: int = param(1, doc="seed of the start vectors")
    sigma: float = param(0.01, doc="Gaussian smoothing of the plotted density, as a fraction of the spectrum's "
                                   "width", validator=positive)
    grid_points: int = param(1000, doc="points of the logged density curve", validator=positive)
    plot: bool = param(True, doc="log the density plot (log scale) as a PNG")


@attrs.define
class ConfidenceConfig:
    n_examples: int = param(1000, doc="examples for loss, entropy, prior mismatch and gradient norm",
                            validator=positive)
    split: Split = param("train", doc="which split the examples come from")
    alignment_examples: int = param(100, doc="examples for the logit-gradient alignment (0: skip)",
                                    validator=non_negative)
    dtype: Dtype = param("float32", doc="precision of the measurement")


@attrs.define
class FullBatchGDConfig:
    steps: int = param(5000, doc="full-batch gradient steps (each counts as one epoch)", validator=positive)
    base_lr: float = param(0.1, doc="lr = base_lr / alpha^(L-2), as the reference", validator=positive)
    scale: Optional[float] = param(None, doc="alpha in the lr rule; default: the model's init_scale (1 if it has "
                                             "none or applies it as a temperature)", validator=positive)
    depth: Optional[int] = param(None, doc="L in the lr rule; default: number of Linear/Conv layers",
                                 validator=positive)
    n_examples: Optional[int] = param(None, doc="training examples in the full batch (default: all)",
                                      validator=positive)
    test_examples: Optional[int] = param(None, doc="test examples for test accuracy (default: all)",
                                         validator=positive)
    log_every: int = param(100, doc="log metrics every N steps (and at the last step)", validator=positive)
    sharpness_steps: int = param(20, doc="Lanczos steps of the logged sharpness (0: skip)",
                                 validator=non_negative)
    sharpness_examples: int = param(1000, doc="examples of the sharpness estimate", validator=positive)


@attrs.define
class CirclesConfig:
    """The official notebook's 2-D, 3-class Circles problem (generated, not the file)."""

    n_train: int = param(2400, doc="training points (the official file: 2,400)", validator=positive)
    n_test: int = param(1200, doc="test points (the official dev file: 1,364)", validator=positive)
    band: float = param(0.05, doc="width of the band inside each class boundary where both labels occur",
                        validator=in_range(0.0, 0.2))
    seed: int = param(0, doc="seed of the points (independent of the run's seed: the data stays fixed)")
    batch_size: int = param(128, doc="training minibatch size", validator=positive)


def circles_shape(config) -> DataShape:
    return DataShape("circles", 3, (1, 1, 2))
