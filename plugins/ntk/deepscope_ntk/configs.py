"""Config classes of the ntk components (attrs only: cheap to import)."""

from __future__ import annotations

import math
from typing import Literal, Optional

import attrs

from deepscope import (AttackConfig, ConfigError, DistillerConfig, ModelConfig, ProbeConfig, TrainerConfig, component_param,
                       non_negative, param, positive)


@attrs.define(kw_only=True)
class NTKMLPConfig(ModelConfig):
    """Fully connected ReLU network in the NTK parameterization (neural-tangents' stax Dense/Relu)."""

    width: int = param(512, doc="units per hidden layer", validator=positive)
    depth: int = param(1, doc="hidden layers (0: a linear model)", validator=non_negative)
    w_std: float = param(math.sqrt(2.0), doc="weight scale: a layer computes w_std / sqrt(fan_in) * W x + b_std * b",
                         validator=positive)
    b_std: float = param(0.1, doc="bias scale (0: no bias contribution)", validator=non_negative)


Kernel = Literal["analytic-ntk", "analytic-nngp", "empirical-ntk", "empirical-nngp"]
EMPIRICAL_KERNELS = ("empirical-ntk", "empirical-nngp")
Targets = Literal["onehot", "centered", "pm1"]
Method = Literal["auto", "jacobian", "ntk-vp"]
METHOD_DOC = ("'auto' (the measured rule: Jacobian contraction with a convolution or for trace kernels, NTK-vector "
              "products for full kernels of >= 3 outputs), 'jacobian' or 'ntk-vp' (same numbers)")


@attrs.define(kw_only=True)
class KernelRegressionConfig(ModelConfig):
    """Kernel ridge regression f(x) = K(x, X)(K + lambda I)^-1 Y, lambda = reg * tr(K) / n, as a model."""

    kernel: Kernel = param("analytic-ntk", doc="'analytic-ntk' / 'analytic-nngp' (FC ReLU network of depth, "
                           "w_std, b_std), 'empirical-ntk' or 'empirical-nngp' (of the network below at its "
                           "initialization, or of the run's trained model with of_run_model)")
    depth: int = param(1, doc="analytic kernels: hidden layers of the FC ReLU network", validator=non_negative)
    w_std: float = param(math.sqrt(2.0), doc="analytic kernels: weight scale (NTK parameterization)",
                         validator=positive)
    b_std: float = param(0.1, doc="analytic kernels: bias scale", validator=non_negative)
    network: object = component_param("model", default={"use": "ntk-mlp"},
                                      doc="empirical kernels: the model whose NTK / NNGP (trace over outputs / k) "
                                          "is the kernel")
    of_run_model: bool = param(False, doc="empirical kernels: the kernel of the run's current (trained) model "
                               "(a frozen copy of its body taken when fitted) instead of `network`; for a "
                               "kernel-regression nested in kernel-fit's `krr` or ntk-transfer's `surrogate`")
    method: Method = param("auto", doc="empirical-ntk: " + METHOD_DOC)
    chunk_size: int = param(64, doc="empirical-ntk: examples per block (memory only)", validator=positive)
    reg: float = param(0.0, doc="ridge: lambda = reg * tr(K) / n (0: ridgeless interpolation)",
                       validator=non_negative)
    targets: Targets = param("onehot", doc="regression targets of hard labels: 'onehot', 'centered' "
                             "(one-hot - 1/C) or 'pm1' (binary only: -1/+1, logits [-f/2, f/2])")

    def __attrs_post_init__(self):
        if self.of_run_model and self.kernel not in EMPIRICAL_KERNELS:
            # worded as attrs' validators are, so the loader reports it at the key path
            raise ValueError(f"'of_run_model' needs an empirical kernel (kernel = 'empirical-ntk' or "
                             f"'empirical-nngp'); kernel = {self.kernel!r} has no network: {self.of_run_model}")

    def check(self, shape) -> None:
        """Called for the run's own [model] only (never for a nested krr / surrogate): there, of_run_model
        would have no other model to copy."""
        if self.of_run_model:
            raise ConfigError("of_run_model = true on the run's own [model]: there is no other, trained model to "
                              "take the kernel of. Train a network as [model] and put this kernel-regression in "
                              "kernel-fit's krr = { ... } or ntk-transfer's surrogate = { ... }", key="of_run_model")


@attrs.define(kw_only=True)
class KernelFitConfig(TrainerConfig):
    """Fit a kernel-regression model on the stage's training data (real, or data = "synthetic")."""

    n: Optional[int] = param(1000, doc="support size: the first n // classes examples of each class "
                             "(none: the whole training split)", validator=positive)
    balanced: bool = param(True, doc="class-balanced support (false: the first n examples)")
    test_n: Optional[int] = param(1000, doc="test examples for the logged test accuracy (none: all)",
                                  validator=positive)
    batch_size: int = param(500, doc="examples per prediction pass (memory only)", validator=positive)
    krr: object = component_param("model", default=None,
                                  doc="fit this kernel-regression instead of the run's model (which stays as it "
                                      "is), e.g. { use = \"kernel-regression\", kernel = \"empirical-ntk\", "
                                      "of_run_model = true }: the after-training kernel of the trained network")


@attrs.define(kw_only=True)
class EmpiricalNTKProbeConfig(ProbeConfig):
    """Statistics of the run model's empirical NTK (or NNGP) on a fixed batch: trace, spectrum, label alignment."""

    kind: Literal["ntk", "nngp"] = param("ntk", doc="'ntk': the tangent kernel; 'nngp': the inner product of the "
                                         "outputs f(x) f(x')^T at the current parameters")

    n: int = param(32, doc="examples in the fixed batch (the first n // classes of each class)", validator=positive)
    split: Literal["train", "test"] = param("train", doc="which split the batch comes from")
    mode: Literal["trace", "full"] = param("trace", doc="'trace': the (n, n) kernel summed over outputs; "
                                           "'full': the (n k, n k) kernel of every output pair")
    method: Method = param("auto", doc="kind = 'ntk': " + METHOD_DOC)
    chunk_size: int = param(64, doc="examples per block (memory only)", validator=positive)
    float64: bool = param(True, doc="compute the kernel on a float64 copy of the parameters")
    top_k: int = param(5, doc="leading eigenvalues to log as eig_0 .. eig_{k-1}", validator=positive)


KRR_FOR_KIP = {"use": "kernel-regression", "kernel": "analytic-ntk", "reg": 1e-6, "targets": "centered"}


@attrs.define(kw_only=True)
class KIPConfig(DistillerConfig):
    """Kernel Inducing Points (Nguyen, Chen & Lee 2021): Adam on a support set so that its KRR fits real batches."""

    krr: object = component_param("model", default=KRR_FOR_KIP,
                                  doc="the kernel-regression whose kernel, reg and targets KIP uses (default: "
                                      "analytic FC-1 NTK, reg 1e-6, centred one-hot, as the KIP notebook)")
    ipc: int = param(10, doc="support images per class, initialized from class-balanced random real images",
                     validator=positive)
    steps: int = param(100, doc="Adam steps", validator=positive)
    lr: float = param(0.04, doc="Adam learning rate (the notebook's 4e-2)", validator=positive)
    learn_labels: bool = param(False, doc="also learn the support labels (returned as regression labels)")
    target_batch: int = param(5000, doc="real target images per step, class-balanced, drawn anew every step "
                              "(capped by the training split)", validator=positive)
    clamp: bool = param(False, doc="clamp the support images to [0, 1] after every step (the notebook does not)")
    eval_every: int = param(0, doc="every N steps, log the support's KRR test accuracy on test_n images (0: at "
                            "the end only)", validator=non_negative)
    test_n: Optional[int] = param(1000, doc="test images for the logged test accuracy (none: all)",
                                  validator=positive)
    seed: Optional[int] = param(None, doc="seed of the initial draw and the target batches (default: run "
                                "seed + 4000)")


@attrs.define(kw_only=True)
class LabelSolveConfig(DistillerConfig):
    """Label Solve: the labels that minimize KIP's loss for a fixed support, in closed form (least squares)."""

    krr: object = component_param("model", default=KRR_FOR_KIP,
                                  doc="the kernel-regression whose kernel, reg and targets define the loss")
    support: str = param("random-real", doc="'random-real' (ipc class-balanced random training images) or a "
                         "distilled set, \"synthetic\" or \"synthetic/<stage name>\"")
    ipc: int = param(10, doc="random-real support: images per class", validator=positive)
    target_n: Optional[int] = param(None, doc="real target images, class-balanced (none: the whole split)",
                                    validator=positive)
    test_n: Optional[int] = param(1000, doc="test images for the logged test accuracy (none: all)",
                                  validator=positive)
    seed: Optional[int] = param(None, doc="seed of the random-real support (default: run seed + 4000)")


@attrs.define(kw_only=True)
class NTKTransferConfig(AttackConfig):
    """Training-free adversarial examples: crafted against a kernel predictor, evaluated on the run's network."""

    surrogate: object = component_param("model", default={"use": "kernel-regression", "kernel": "analytic-ntk"},
                                        doc="the kernel-regression fitted in setup and attacked (any kernel, reg, "
                                            "targets)")
    n: Optional[int] = param(1000, doc="surrogate support: the first n // classes training images of each class "
                             "(none: the whole split)", validator=positive)
    attack: object = component_param("attack", default={"use": "pgd", "eps": 8 / 255, "steps": 10,
                                                        "step_size": 0.01, "random_start": False},
                                     doc="the attack run against the surrogate (its n_examples and batch_size are "
                                         "this stage's)")


def _indices(instance, attribute, value):
    if not value or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value):
        raise ValueError(f"'{attribute.name}' must be a non-empty list of eigen-indices >= 0 (0: the largest "
                         f"eigenvalue): {list(value)!r}")


@attrs.define(kw_only=True)
class EigenfeaturesConfig(ProbeConfig):
    """The kernel predictor split along the training kernel's eigenvectors: per feature, usefulness and robustness."""

    indices: list[int] = param(factory=lambda: [0, 1, 2, 3, 4, 5, 10, 25], validator=_indices,
                               doc="eigen-indices to measure, 0 = the largest eigenvalue (the notebook's list "
                                   "ends at n - 1)")
    attack: object = component_param("attack", default={"use": "fgsm", "eps": 8 / 255},
                                     doc="the attack run against each feature separately (robustness)")
    n_test: Optional[int] = param(100, doc="test images the features are measured on (none: all)",
                                  validator=positive)
    summary_k: int = param(3, doc="robust_acc_top{k} / _bottom{k}: the mean over the k smallest / largest "
                           "requested indices", validator=positive)
    gradient_images: int = param(4, doc="features whose input gradient on the first test image is plotted "
                                 "(tracked runs; 0: none)", validator=non_negative)
    batch_size: int = param(250, doc="test images per pass (memory only)", validator=positive)


@attrs.define(kw_only=True)
class LinearizedConfig(ModelConfig):
    """A network replaced by its first-order Taylor expansion at initialization (the lazy-regime network)."""

    network: object = component_param("model", default={"use": "ntk-mlp"},
                                      doc="the network linearized: f(x; theta0) + J(x; theta0) (theta - theta0)")


@attrs.define(kw_only=True)
class GDMSEConfig(TrainerConfig):
    """Full-batch gradient descent on the mean squared error: the setting of the NTK's closed-form dynamics."""

    steps: int = param(100, doc="gradient steps (each one counts as an epoch: probes with `every` see them)",
                       validator=positive)
    lr: float = param(1.0, doc="step size eta on L = 1/(2n) sum_i ||f(x_i) - y_i||^2", validator=positive)
    n: Optional[int] = param(256, doc="the full batch: the first n // classes training images of each class "
                             "(none: the whole split)", validator=positive)
    targets: Targets = param("centered", doc="regression targets: 'onehot', 'centered' or 'pm1' (binary: "
                             "a single output)")


@attrs.define(kw_only=True)
class NTKDynamicsConfig(ProbeConfig):
    """The network's training-set outputs under gd-mse against the NTK prediction from its initial kernel."""

    float64: bool = param(True, doc="compute the initial kernel on a float64 copy of the parameters")
    chunk_size: int = param(64, doc="examples per kernel block (memory only)", validator=positive)
    method: Method = param("auto", doc=METHOD_DOC)


@attrs.define(kw_only=True)
class NTKLazyConfig(ProbeConfig):
    """Relative kernel change over training against width: the lazy regime appears as width grows."""

    network: object = component_param("model", default={"use": "ntk-mlp"},
                                      doc="the model family; `width_key` is set to each of `widths`")
    width_key: str = param("width", doc="the network parameter that sets the width")
    widths: list[int] = param(factory=lambda: [64, 256, 1024, 2048], doc="widths to train and measure")
    seeds: int = param(2, doc="networks per width (mean reported)", validator=positive)
    n: int = param(32, doc="training images (class-balanced) the networks are trained and measured on",
                   validator=positive)
    steps: int = param(100, doc="full-batch MSE gradient steps per network", validator=positive)
    lr: float = param(0.3, doc="gradient step size", validator=positive)
    chunk_size: int = param(4, doc="examples per kernel block: a block holds chunk_size x outputs x parameters "
                            "float64 Jacobian entries (130 MB per example for a width-2048 ntk-mlp on 28x28)",
                            validator=positive)
    method: Method = param("auto", doc=METHOD_DOC)


def _positive_ints(instance, attribute, value):
    if not value or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in value):
        raise ValueError(f"'{attribute.name}' must be a non-empty list of positive integers: {list(value)!r}")


@attrs.define(kw_only=True)
class NTKEvolutionConfig(ProbeConfig):
    """The run model's empirical NTK on a fixed batch against its first and previous measurement."""

    n: int = param(20, doc="the fixed batch: the first n // classes training images of each class "
                   "(the official code: 250)", validator=positive)
    mode: Literal["full", "trace"] = param("full", doc="'full': the (n k, n k) kernel of every output pair "
                                           "(the official trace_axes = ()); 'trace': (n, n)")
    attack: object = component_param("attack", default=None,
                                     doc="also measure the kernel on this attack's version of the batch (adv_ "
                                         "metrics), e.g. { use = \"pgd\", eps = 0.0313725 }")
    mass_k: list[int] = param(factory=lambda: [10, 20], validator=_positive_ints,
                              doc="mass_top{k}: the share of sum lambda^2 in the top k eigenvalues")
    history: bool = param(True, doc="keep every kernel (float32) in the run state for ntk-evolution-report")
    method: Method = param("auto", doc=METHOD_DOC)
    chunk_size: int = param(64, doc="examples per kernel block (memory only)", validator=positive)
    float64: bool = param(True, doc="compute on a float64 copy of the parameters")


@attrs.define(kw_only=True)
class NTKEvolutionReportConfig(ProbeConfig):
    """End of run: the pairwise kernel-distance heat-map and the polar plot of an ntk-evolution history."""

    probe: str = param("probe/ntk-evolution", doc="the metric prefix of the ntk-evolution probe to report "
                       "(probe/<its name>)")


@attrs.define(kw_only=True)
class AdvNTKCNNConfig(ModelConfig):
    """The official code's CNN_mega: conv32-32-maxpool-64-64-128-128-avgpool-dense, Flax initialization."""
