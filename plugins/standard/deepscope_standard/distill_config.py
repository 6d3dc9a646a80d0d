"""Config classes of the distillation toolkit (``distilled-eval``, its alias ``synthetic-accuracy``,
``synthetic-baseline``, ``synthetic-grid``); no torch."""

from __future__ import annotations

from typing import Any, Literal, Optional

import attrs

from deepscope import DistillerConfig, in_range, non_negative, param, positive


def _lr_value(instance, attribute, value):
    if value == "learned":
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"'{attribute.name}' must be a positive number or \"learned\" (the synthetic set's own "
                         f"learned lr): {value!r}")


def _model_specs(instance, attribute, value):
    for i, spec in enumerate(value):
        if not isinstance(spec, (str, dict)) or (isinstance(spec, dict) and "use" not in spec):
            raise ValueError(f"'{attribute.name}' must be a list of model names or tables with `use` "
                             f"(item {i} is {spec!r}): {value!r}")


DSA_OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")


def _dsa_strategy(instance, attribute, value):
    ops = value.split("_")
    if not value or any(op not in DSA_OPS for op in ops):
        raise ValueError(f"'{attribute.name}' must be '_'-joined DSA ops from {', '.join(DSA_OPS)}: {value!r}")


def _positive_list(instance, attribute, value):
    if any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in value):
        raise ValueError(f"'{attribute.name}' must be a list of positive integers: {list(value)!r}")


@attrs.define(kw_only=True)
class DistilledEvalConfig:
    """The DC/MTT evaluation protocol: fresh networks trained on a synthetic set, tested on real data."""

    set: str = param("synthetic", doc="the synthetic set: \"synthetic\" (the latest) or \"synthetic/<stage name>\"")
    models: list[Any] = param(factory=list, validator=_model_specs,
                              doc="model specs to evaluate (cross-architecture), e.g. [\"mlp\", { use = "
                                  "\"convnet\", width = 64 }]; empty: the pipeline's [model]")
    n_models: int = param(5, doc="fresh networks per model spec (seeds run seed + 1000 + i)", validator=positive)
    epochs: int = param(1000, doc="passes over the synthetic set per network", validator=positive)
    lr: Any = param(0.01, validator=_lr_value,
                    doc="SGD learning rate, or \"learned\" for the synthetic set's learned lr (an error if it "
                        "has none)")
    use_synthetic_lr: bool = param(False, doc="use the set's learned lr when it has one, else `lr`")
    momentum: float = param(0.9, doc="SGD momentum", validator=in_range(0, 1, high_open=True))
    weight_decay: float = param(5e-4, doc="SGD weight decay (coupled)", validator=non_negative)
    decay_at_half: bool = param(True, doc="multiply the lr by 0.1 from epoch epochs // 2 on")
    batch_size: int = param(256, doc="training batch size", validator=positive)
    augment: Literal["none", "flip-rotate", "dsa"] = param(
        "none", doc="augmentation of every training batch: none, RaT-BPTT's flip-or-rotate, or DSA (MTT's "
                    "evaluation uses dsa)")
    dsa_strategy: str = param("color_crop_cutout_flip_scale_rotate", validator=_dsa_strategy,
                              doc="augment = \"dsa\": the '_'-joined ops, one drawn per batch (DSA's mode 'S')")
    budgets: list[int] = param(factory=list, validator=_positive_list,
                               doc="also evaluate class-balanced prefixes: the first k images of each class, in "
                                   "the set's order, one table row per k")
    protocol: Literal["dc-mtt", "ratbptt-in-code"] = param(
        "dc-mtt", doc="dc-mtt (default); ratbptt-in-code: RaT-BPTT's own in-code evaluation, the best over "
                      "`in_code_steps` chosen ON THE TEST SET (optimistic; metrics end in _best_of_test)")
    in_code_optimizer: Literal["adam", "sgd"] = param(
        "adam", doc="ratbptt-in-code: the inner optimizer (the official commands use Adam, lr 1e-3)")
    in_code_steps: list[int] = param(factory=lambda: [300, 600, 1000, 3000], validator=_positive_list,
                                     doc="ratbptt-in-code: the step counts the best is taken over")


@attrs.define(kw_only=True)
class SyntheticAccuracyConfig(DistilledEvalConfig):
    """Alias of ``distilled-eval`` with its historical defaults (3 networks, 300 epochs, the learned lr if any)."""

    n_models: int = param(3, doc="fresh networks per model spec (seeds run seed + 1000 + i)", validator=positive)
    epochs: int = param(300, doc="passes over the synthetic set per network", validator=positive)
    use_synthetic_lr: bool = param(True, doc="use the set's learned lr when it has one, else `lr`")


def register_probes(register):
    register("distilled-eval", "deepscope_standard.distilled_eval:DistilledEval", DistilledEvalConfig,
             doc="DC/MTT evaluation of a synthetic set: N fresh networks per model spec, SGD 0.9 / wd 5e-4, "
                 "lr x0.1 at half; mean and std of real test accuracy, per budget.",
             requires=("synthetic",))
    register("synthetic-accuracy", "deepscope_standard.distilled_eval:DistilledEval", SyntheticAccuracyConfig,
             doc="Alias of distilled-eval (3 networks, 300 epochs, the set's learned lr when it has one).",
             requires=("synthetic",))
    register("synthetic-grid", "deepscope_standard.grid:SyntheticGrid", SyntheticGridConfig,
             doc="A class-labelled, de-normalized image grid of a synthetic set (synthetic_grid.png).",
             requires=("synthetic",))


@attrs.define(kw_only=True)
class SyntheticBaselineConfig(DistillerConfig):
    """A distilled set's baselines at the same size: random real images, or class means."""

    method: Literal["random-real", "class-means"] = param(
        "random-real", doc="random-real: ipc distinct random training images per class; class-means: per class, "
                           "the means of ipc random near-equal parts of its images (ipc = 1: the class mean)")
    ipc: int = param(1, doc="images per class", validator=positive)
    seed: Optional[int] = param(None, doc="seed of the draw (default: run seed + 3000)")
    grid: bool = param(True, doc="log the set's image grid (synthetic_grid.png) when the run is tracked")


@attrs.define(kw_only=True)
class SyntheticGridConfig:
    """A class-labelled image grid of a synthetic set, de-normalized to pixels, as one PNG artifact."""

    set: str = param("synthetic", doc="the synthetic set: \"synthetic\" (the latest) or \"synthetic/<stage name>\"")
    per_class: int = param(10, doc="images shown per class (the first ones, in the set's order)",
                           validator=positive)


def register_distillers(register):
    register("synthetic-baseline", "deepscope_standard.baselines:SyntheticBaseline", SyntheticBaselineConfig,
             doc="Class-balanced random real images or class means, ipc per class: the baselines of a "
                 "distilled set in the same run.")
