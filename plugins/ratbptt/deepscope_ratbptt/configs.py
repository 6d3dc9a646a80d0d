"""Config classes of the RaT-BPTT components (attrs only: cheap to import)."""

from __future__ import annotations

from typing import Literal, Optional

import attrs

from deepscope import DistillerConfig, in_range, non_negative, param, positive

WindowStart = Literal["random-per-epoch", "random", "fixed", "moving"]
InnerOptim = Literal["adam", "sgd"]
Init = Literal["unit-norm-noise", "real"]
Augment = Literal["none", "flip-rotate"]
AdamEps = Literal["torch", "higher"]


def _positive_list(instance, attribute, value):
    if not value or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in value):
        raise ValueError(f"'{attribute.name}' must be a non-empty list of positive integers: {list(value)!r}")


@attrs.define(kw_only=True)
class UnrollConfig(DistillerConfig):
    """What RaT-BPTT and Boost-DD share: the inner loop, the window, the outer optimizer."""

    meta_steps: int = param(300, doc="outer (meta) steps; Boost-DD: per block", validator=positive)
    unroll: int = param(20, doc="T: inner steps of the longest unroll", validator=positive)
    window: int = param(10, doc="W: the last inner steps backpropagated through (window = unroll: full BPTT)",
                        validator=positive)
    start: WindowStart = param(
        "random-per-epoch", doc="where the window starts: random-per-epoch (official: one draw in [0, T-W] per "
                                "pass over the real data), random (a draw per meta-step), fixed (T-W: truncated "
                                "BPTT), moving (from 0, +W when the pass's meta-loss stops improving)")
    moving_patience: int = param(2, doc="start = moving: passes without a better mean meta-loss before the "
                                        "window moves on by W (the official code waits 60 epochs of test loss)",
                                 validator=positive)
    inner_optim: InnerOptim = param("adam", doc="inner optimizer (official commands: adam)")
    inner_lr: float = param(1e-3, doc="inner learning rate", validator=positive)
    inner_adam_eps: AdamEps = param(
        "torch", doc="inner adam: where the window's steps add eps, torch (torch.optim.Adam, after the bias "
                     "correction) or higher (before it, as the official window's higher.DifferentiableAdam; the "
                     "prefix stays torch.optim.Adam, as there)")
    inner_momentum: float = param(0.9, doc="inner sgd: momentum", validator=in_range(0, 1, high_open=True))
    inner_weight_decay: float = param(5e-4, doc="inner sgd: weight decay (the official default)",
                                      validator=non_negative)
    lr: float = param(1e-3, doc="outer Adam learning rate on the images", validator=positive)
    real_batch: int = param(256, doc="real images per meta-step (official CIFAR: 5000)", validator=positive)
    batch_per_class: int = param(10, doc="synthetic images of each sampled class per inner step",
                                 validator=positive)
    classes_per_batch: Optional[int] = param(None, doc="classes sampled per inner step (none: every class)",
                                             validator=positive)
    learn_labels: bool = param(False, doc="learn soft labels (one-hot init, clipped at 0 after each step)")
    label_lr_scale: float = param(1.0, doc="learn_labels: the labels' lr is lr / label_lr_scale",
                                  validator=positive)
    init: Init = param("unit-norm-noise", doc="unit-norm-noise (official: randn, each image scaled to L2 norm 1, "
                                              "in the model's input space) or real (random real images)")
    syn_aug: Augment = param("flip-rotate", doc="augmentation of every inner synthetic batch")
    real_aug: Augment = param("flip-rotate", doc="augmentation of every real batch")
    clip_coef: float = param(0.9, doc="EMA coefficient of the gradient-norm clipping (norms clipped at twice the "
                                      "EMA)", validator=in_range(0, 1, high_open=True))
    clip: bool = param(True, doc="EMA gradient-norm clipping on the images")
    checkpoint_inner: bool = param(False, doc="recompute the window's activations in the backward pass "
                                              "(less memory, more time)")
    log_every: int = param(10, doc="print progress every this many meta-steps", validator=positive)
    grid: bool = param(True, doc="log the final set's image grid when the run is tracked")

    def __attrs_post_init__(self):
        if self.window > self.unroll:
            raise ValueError(f"'window' ({self.window}) must be at most 'unroll' ({self.unroll}); window = unroll "
                             "is full BPTT")


@attrs.define(kw_only=True)
class RatBPTTConfig(UnrollConfig):
    """RaT-BPTT (Feng, Vedantam & Kempe 2024): the official algorithm, without `higher`."""

    ipc: int = param(10, doc="synthetic images per class", validator=positive)


@attrs.define(kw_only=True)
class BoostDDConfig(UnrollConfig):
    """Boost-DD: nested blocks, each distilled with RaT-BPTT while the earlier ones join every inner batch."""

    blocks: list[int] = param(factory=lambda: [1, 1, 2], validator=_positive_list,
                              doc="images per class of each block, in order (every prefix of blocks is a budget)")
    beta: float = param(0.1, doc="earlier blocks are updated at beta x lr (0: frozen, bit-identical)",
                        validator=non_negative)
