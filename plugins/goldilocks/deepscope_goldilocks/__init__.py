"""deepscope-goldilocks: loss curvature at initialization and training outside the Goldilocks zone.

Reproduces Vysogorets, Dawid & Kempe, "Deconstructing the Goldilocks Zone of
Neural Network Initialization" (ICML 2024, arXiv:2402.03579). Importing this
module is cheap: factories are "module:attr" strings loaded on first use.
"""

from __future__ import annotations

from deepscope import hookimpl

from .configs import CirclesConfig, circles_shape, ConfidenceConfig, CurvatureConfig, FullBatchGDConfig, GaussNewtonConfig, SpectralDensityConfig


@hookimpl
def deepscope_register_probes(register):
    register("curvature", "deepscope_goldilocks.probes:CurvatureProbe", CurvatureConfig,
             doc="Tr(H)/||H||_F and positive-eigenvalue fraction of the loss Hessian in a random subspace; "
                 "Hutchinson trace/Frobenius; Lanczos sharpness")
    register("gauss-newton", "deepscope_goldilocks.probes:GaussNewtonProbe", GaussNewtonConfig,
             doc="Gauss-Newton split H = G + H-term: curvature ratio and spectral norm of each part")
    register("spectral-density", "deepscope_goldilocks.probes:SpectralDensityProbe", SpectralDensityConfig,
             doc="eigenvalue density of the full loss Hessian by stochastic Lanczos quadrature: mass above zero, "
                 "edges, trace, and a density plot")
    register("confidence", "deepscope_goldilocks.probes:ConfidenceProbe", ConfidenceConfig,
             doc="entropy, prior mismatch ||Q - p_bar||, gradient norm, loss, zero logits, logit-gradient alignment")


@hookimpl
def deepscope_register_trainers(register):
    register("full-batch-gd", "deepscope_goldilocks.trainer:FullBatchGD", FullBatchGDConfig,
             doc="full-batch gradient descent with lr = base_lr / alpha^(L-2), logging laziness and sharpness")


@hookimpl
def deepscope_register_datasets(register):
    register("circles", "deepscope_goldilocks.circles:build_circles", CirclesConfig, shape=circles_shape,
             doc="the official notebook's 2-D, 3-class Circles toy problem (uniform in a disk, labelled by radius)")
