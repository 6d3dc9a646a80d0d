"""deepscope-ntk: neural tangent kernels for any registered model.

Empirical NTK (``deepscope_ntk.empirical``), the analytic NTK/NNGP of fully connected ReLU networks
(``deepscope_ntk.analytic``), kernel ridge regression as a model, and kernel statistics as a probe.
Material of Kempe's lecture notes (arXiv:2307.02693) and Tsilivis & Kempe (arXiv:2210.05577).
Importing this module is cheap: factories are "module:attr" strings loaded on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from deepscope import hookimpl

from .configs import (AdvNTKCNNConfig, EigenfeaturesConfig, EmpiricalNTKProbeConfig, GDMSEConfig, KernelFitConfig, KernelRegressionConfig, KIPConfig, LabelSolveConfig,
                      LinearizedConfig, NTKDynamicsConfig, NTKEvolutionConfig,
                      NTKEvolutionReportConfig, NTKLazyConfig, NTKMLPConfig, NTKTransferConfig)

#: the public part other plugins build on (robust-data): name -> defining submodule, loaded on first
#: access (PEP 562) so that ``import deepscope_ntk`` stays torch-free. Import these from here only.
_LAZY = {
    "empirical_ntk": "deepscope_ntk.empirical",
    "empirical_nngp": "deepscope_ntk.empirical",
    "fc_relu_kernel": "deepscope_ntk.analytic",
    "KernelRegression": "deepscope_ntk.krr",
    "encode_targets": "deepscope_ntk.krr",
    "balanced_indices": "deepscope_ntk.krr",
    "KIP": "deepscope_ntk.kip",
    "kip_loss": "deepscope_ntk.kip",
    "ridge_system": "deepscope_ntk.kip",
    "solve_labels": "deepscope_ntk.kip",
    "class_balanced_draw": "deepscope_ntk.kip",
    "predicted_classes": "deepscope_ntk.kip",
    "hard_classes": "deepscope_ntk.kip",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'deepscope_ntk' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["KIPConfig", "KernelRegressionConfig", *_LAZY]


@hookimpl
def deepscope_register_models(register):
    register("ntk-mlp", "deepscope_ntk.mlp:make_ntk_mlp", NTKMLPConfig,
             doc="NTK-parameterized fully connected ReLU network (W, b ~ N(0,1), scaled by w_std/sqrt(fan_in), b_std)")
    register("kernel-regression", "deepscope_ntk.krr:make_kernel_regression", KernelRegressionConfig,
             doc="kernel ridge regression K(x,X)(K+lambda I)^-1 Y on an analytic or empirical NTK/NNGP; "
                 "support in extra state; logits for the stock attacks")
    register("adv-ntk-cnn", "deepscope_ntk.cnn:make_adv_ntk_cnn", AdvNTKCNNConfig,
             doc="the official adv-ntk CNN_mega (conv32-32-maxpool-64-64-128-128-avgpool-dense), Flax init")
    register("linearized", "deepscope_ntk.dynamics:make_linearized", LinearizedConfig,
             doc="a network's first-order Taylor expansion at initialization (jvp): its NTK never changes")


@hookimpl
def deepscope_register_trainers(register):
    register("kernel-fit", "deepscope_ntk.krr:KernelFit", KernelFitConfig,
             doc="fit kernel-regression on the stage's training data (class-balanced n; data = \"synthetic\" works)")
    register("gd-mse", "deepscope_ntk.dynamics:GDMSE", GDMSEConfig,
             doc="full-batch gradient descent on MSE (one step per epoch, checkpointed); with [model] use = "
                 "\"linearized\" the lazy-regime network")


@hookimpl
def deepscope_register_probes(register):
    register("empirical-ntk", "deepscope_ntk.probes:EmpiricalNTKProbe", EmpiricalNTKProbeConfig,
             doc="empirical NTK of the run's model on a fixed batch: trace, condition number, top eigenvalues, "
                 "alignment y^T K y / (||K||_F ||y||^2)")
    register("ntk-dynamics", "deepscope_ntk.dynamics:NTKDynamics", NTKDynamicsConfig,
             doc="during gd-mse: training-set outputs against f_t = f_0 + (I - (I - eta Theta/n)^t)(Y - f_0) from the "
                 "initial NTK (and the gradient-flow exp form)")
    register("ntk-evolution", "deepscope_ntk.evolution:NTKEvolution", NTKEvolutionConfig,
             doc="periodic: the model's empirical NTK on a fixed batch (optionally its adversarial version) against "
                 "the initial and previous kernels: similarity, distance, radius, angle, top-k spectral mass")
    register("ntk-evolution-report", "deepscope_ntk.evolution:NTKEvolutionReport", NTKEvolutionReportConfig,
             doc="end of run: pairwise kernel-distance heat-map and polar plot of an ntk-evolution history")
    register("ntk-lazy", "deepscope_ntk.lazy:NTKLazy", NTKLazyConfig,
             doc="relative change of the empirical NTK over full-batch MSE training, per width; log-log slope, plot")
    register("ntk-eigenfeatures", "deepscope_ntk.eigenfeatures:EigenfeaturesProbe", EigenfeaturesConfig,
             doc="the fitted kernel predictor split along the training kernel's eigenvectors: per feature, clean "
                 "and attacked accuracy; table, gradient images, top/bottom robust accuracy, Spearman(index, robust)")


@hookimpl
def deepscope_register_distillers(register):
    register("kip", "deepscope_ntk.kip:KIP", KIPConfig,
             doc="Kernel Inducing Points: Adam on a class-balanced real-initialized support (optionally its labels) "
                 "so that its KRR fits real target batches; float64; a checkpointed step loop")
    register("label-solve", "deepscope_ntk.kip:LabelSolve", LabelSolveConfig,
             doc="the closed-form (least-squares) labels of a fixed support under KIP's loss")


@hookimpl
def deepscope_register_attacks(register):
    register("ntk-transfer", "deepscope_ntk.transfer:NTKTransfer", NTKTransferConfig,
             doc="training-free attack: FGSM/PGD crafted against a kernel-regression surrogate fitted in setup, "
                 "evaluated on the run's network (Tsilivis & Kempe 2022)")
