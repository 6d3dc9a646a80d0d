"""Config classes of the galaxy components (attrs only: cheap to import)."""

from __future__ import annotations

from typing import Literal, Optional

import attrs

from deepscope import DatasetConfig, DistillerConfig, ProbeConfig, in_range, non_negative, param, positive

DSA_DEFAULT = "color_crop_cutout_flip_scale_rotate"
DSA_OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")  # DSA's ops (deepscope_standard.DSA)
PixInit = Literal["real", "noise"]


def dsa_strategy_ops(instance, attribute, value) -> None:
    ops = [op for op in value.split("_") if op]
    if not ops or any(op not in DSA_OPS for op in ops):
        raise ValueError(f"'{attribute.name}' must be '_'-joined DSA ops from {list(DSA_OPS)}: {value!r}")


@attrs.define(kw_only=True)
class ExpertConfig:
    """The expert trajectories (MTT's ``buffer.py``): plain SGD from fresh networks, every epoch saved."""

    num: int = param(100, doc="number of experts (official: 100)", validator=positive)
    epochs: int = param(50, doc="epochs per expert; epoch 0 (the initialization) is saved too", validator=positive)
    lr: float = param(0.01, doc="expert SGD lr (official lr_teacher 0.01, constant)", validator=positive)
    momentum: float = param(0.0, doc="expert SGD momentum (official: 0)", validator=in_range(0, 1, high_open=True))
    weight_decay: float = param(0.0, doc="expert SGD weight decay (official l2: 0)", validator=non_negative)
    batch: int = param(256, doc="expert batch size", validator=positive)
    dsa: bool = param(True, doc="DSA augmentation of every expert batch (official: on)")
    seed: int = param(0, doc="expert i starts from seed + i (independent of the run seed, so runs share experts)")


def expert_table(value) -> dict:
    """The ``experts`` table with its defaults filled in, checked key by key (a plain dict, so the resolved
    config stays plain TOML)."""
    if not isinstance(value, dict):
        raise ValueError(f"'experts' must be a table such as {{ num = 5, epochs = 10 }}: {value!r}")
    fields = attrs.fields_dict(ExpertConfig)
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ValueError(f"'experts' has unknown key(s) {unknown}; it takes {sorted(fields)}")
    for key, v in value.items():
        kind = type(fields[key].default)
        ok = isinstance(v, bool) if kind is bool else (not isinstance(v, bool) and isinstance(v, (int, float) if
                                                                                              kind is float else kind))
        if not ok:
            raise ValueError(f"'experts' key {key!r} must be {kind.__name__}: {v!r}")
    try:
        return attrs.asdict(ExpertConfig(**{k: (float(v) if fields[k].default.__class__ is float else v)
                                            for k, v in value.items()}))
    except ValueError as exc:
        raise ValueError(f"'experts' is invalid: {exc}") from exc


@attrs.define(kw_only=True)
class MatchingConfig(DistillerConfig):
    """What MTT and STM share: the synthetic set, the unroll, the outer optimizers, the experts."""

    ipc: int = param(1, doc="synthetic images per class", validator=positive)
    syn_steps: int = param(20, doc="N: synthetic SGD steps unrolled per iteration (0: the loss is exactly 1)",
                           validator=non_negative)
    iterations: int = param(5000, doc="distillation iterations (official MTT: 5000; STM: 20000)", validator=positive)
    lr_img: float = param(1000.0, doc="SGD lr of the images (momentum 0.5)", validator=positive)
    lr_teacher: float = param(0.01, doc="initial synthetic lr (the student's step size)", validator=positive)
    batch_syn: Optional[int] = param(None, doc="synthetic images per unrolled step (none: the whole set)",
                                     validator=positive)
    pix_init: PixInit = param("real", doc="real (random real images of each class) or noise (standard normal)")
    dsa: bool = param(True, doc="DSA on every unrolled step (a fresh draw per step)")
    dsa_strategy: str = param(DSA_DEFAULT, doc="'_'-joined DSA ops", validator=dsa_strategy_ops)
    checkpoint_unroll: bool = param(False, doc="recompute each unrolled step's activations in the backward pass "
                                               "(memory no longer grows with the activations of N steps)")
    experts: dict = param(factory=dict, converter=lambda v: expert_table(v),
                          doc="the expert trajectories: a table of ExpertConfig's keys (num 100, epochs 50, lr 0.01, "
                              "momentum 0, weight_decay 0, batch 256, dsa true, seed 0), e.g. { num = 5, epochs = 10 }")

    @property
    def expert_config(self) -> ExpertConfig:
        return ExpertConfig(**self.experts)
    log_every: int = param(10, doc="print progress every this many iterations", validator=positive)
    grid: bool = param(True, doc="log the final set's image grid when the run is tracked")


@attrs.define(kw_only=True)
class MTTConfig(MatchingConfig):
    """Matching Training Trajectories (Cazenavette et al., CVPR 2022)."""

    expert_epochs: int = param(2, doc="M: the target is the expert M epochs after the start", validator=positive)
    max_start_epoch: int = param(20, doc="T+: start epochs are drawn from 0..T+-1", validator=positive)
    lr_lr: float = param(1e-5, doc="SGD lr (momentum 0.5) of the synthetic lr", validator=non_negative)

    def __attrs_post_init__(self):
        need = self.max_start_epoch - 1 + self.expert_epochs
        if need > self.experts['epochs']:
            raise ValueError(f"'max_start_epoch' ({self.max_start_epoch}) - 1 + 'expert_epochs' ({self.expert_epochs})"
                             f" = {need} exceeds the experts' epochs ({self.experts['epochs']}); lower max_start_epoch "
                             "or raise experts.epochs")


@attrs.define(kw_only=True)
class STMConfig(MatchingConfig):
    """Self-adaptive trajectory matching (Guan et al. 2023): M = 1, a start-epoch cap that advances itself."""

    iterations: int = param(20000, doc="the most iterations (the run usually stops itself first)",
                            validator=positive)
    init_epoch: int = param(1, doc="the start-epoch cap at the beginning", validator=positive)
    max_start_epoch: int = param(29, doc="the cap never exceeds this", validator=positive)
    sample_method: Literal["cycle", "random"] = param("cycle", doc="start epoch: it % cap (cycle) or uniform below cap")
    lr_mode: Literal["global", "independent"] = param(
        "global", doc="one learnable log-lr, or one per start epoch (their SGD lr is lr_lr x cap)")
    lr_lr: float = param(0.01, doc="SGD lr (momentum 0.5) of the log synthetic lr", validator=non_negative)
    sigma: float = param(5.0, doc="lambda: a stage passes when the Pearson r < -lambda / sqrt(n - 2)",
                         validator=positive)
    min_duration: int = param(1, doc="validation losses a stage needs before its first test", validator=positive)
    max_duration: int = param(1000, doc="a stage longer than this starts fine-tuning", validator=positive)
    finetune_every: int = param(50, doc="fine-tuning: decay lr_img on iterations divisible by this",
                                validator=positive)
    finetune_decay: float = param(0.8, doc="fine-tuning: lr_img factor", validator=in_range(0, 1, low_open=True,
                                                                                              high_open=True))
    lr_img_floor: float = param(50.0, doc="fine-tuning stops the run when lr_img falls below this",
                                validator=positive)

    def __attrs_post_init__(self):
        if self.init_epoch > self.max_start_epoch:
            raise ValueError(f"'init_epoch' ({self.init_epoch}) exceeds 'max_start_epoch' ({self.max_start_epoch})")
        if self.max_start_epoch + 1 > self.experts['epochs']:
            raise ValueError(f"'max_start_epoch' ({self.max_start_epoch}) + 1 exceeds the experts' epochs "
                             f"({self.experts['epochs']}): the next stage needs expert epoch cap + 1; raise "
                             "experts.epochs or lower max_start_epoch")


@attrs.define(kw_only=True)
class PrototypeGridConfig(ProbeConfig):
    """The synthetic images as class-labelled prototypes: one figure, and one image per class."""

    set: str = param("synthetic", doc="'synthetic' (the latest) or 'synthetic/<stage name>'")
    clip_sigma: Optional[float] = param(2.5, doc="MTT's display: the set clipped to its mean +- this many stds, "
                                                 "then each image scaled to [0, 1] (none: pixels clamped)",
                                        validator=positive)
    per_class: int = param(10, doc="images of each class shown (the first ones of the set)", validator=positive)
    per_class_files: bool = param(True, doc="also log prototypes/class_<k>.png, one per class")


@attrs.define(kw_only=True)
class GZoo2Config(DatasetConfig):
    """The authors' curated Galaxy Zoo 2 folders: <root>/<class 0..8>/<id>.jpg."""

    root: Optional[str] = param(None, doc="the curated folder (default: $DEEPSCOPE_DATA/gzoo2)")
    test_per_class: int = param(100, doc="images of each class in the test split (official: 100)", validator=positive)
    size: int = param(128, doc="side after the central half-crop (official: 128)", validator=positive)
    rotations: int = param(1, doc="training copies per image, rotated by 360/rotations degrees (10: GZoo2_aug)",
                           validator=positive)
    transpose_quirk: bool = param(False, doc="reproduce the official img.T (swaps height and width)")
    batch_size: int = param(256, doc="training batch size", validator=positive)
    test_batch_size: int = param(1000, doc="evaluation batch size", validator=positive)


@attrs.define(kw_only=True)
class GZoo2CatalogueConfig(GZoo2Config):
    """Builds the curated folders from the GZ2 catalogue table and a directory of JPEGs, then loads them."""

    catalogue: str = param(doc="the GZ2 catalogue table (CSV with dr7objid and the t.._fraction columns)")
    images: str = param(doc="directory of <id>.jpg cut-outs")
    per_class: int = param(600, doc="most confident images kept per class (official: 600)", validator=positive)
    id_column: str = param("dr7objid", doc="the catalogue column that names the images")
    suffix: str = param("fraction", doc="vote columns used: t.._<suffix> (fraction, weighted_fraction, debiased)")

    def __attrs_post_init__(self):
        if self.test_per_class >= self.per_class:
            raise ValueError(f"'test_per_class' ({self.test_per_class}) must be below 'per_class' ({self.per_class})")
