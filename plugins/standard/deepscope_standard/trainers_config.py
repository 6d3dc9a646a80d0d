"""Config classes of the trainers (``standard``, ``adversarial``); no torch import here."""

from __future__ import annotations

from typing import Literal, Optional

import attrs

from deepscope import component_param, in_range, non_negative, param, positive


@attrs.define(kw_only=True)
class TrainConfig:
    """Optimizer, schedule and length of a supervised training run (shared by every trainer)."""

    optimizer: Literal["sgd", "adam"] = param("sgd", doc="'sgd' (with momentum) or 'adam'")
    lr: float = param(0.05, doc="peak learning rate", validator=positive)
    momentum: float = param(0.9, doc="SGD momentum (Adam: beta1)", validator=in_range(0, 1, high_open=True))
    weight_decay: float = param(5e-4, doc="L2 weight decay (coupled, as torch's SGD/Adam)", validator=non_negative)
    nesterov: bool = param(False, doc="Nesterov momentum (SGD only)")
    schedule: Literal["constant", "step", "cosine"] = param(
        "constant", doc="learning-rate schedule: constant; step (x gamma at each milestone); cosine (to 0)")
    milestones: tuple[int, ...] = param((), doc="step schedule: epochs (or iterations, when `iterations` is "
                                                "set) at which the lr is multiplied by gamma", converter=tuple)
    gamma: float = param(0.1, doc="step schedule: lr factor at each milestone", validator=positive)
    epochs: int = param(10, doc="passes over the training set (ignored when `iterations` is set)",
                        validator=positive)
    iterations: Optional[int] = param(None, doc="train for this many optimizer steps instead of `epochs`",
                                      validator=positive)
    loss: Literal["ce", "mse"] = param(
        "ce", doc="'ce': cross-entropy (hard labels, or soft probability labels as targets); 'mse': squared "
                  "error ||f(x) - t||^2 summed over the C outputs, averaged over the batch, as the KIP/NTK "
                  "papers train on distilled sets: integer labels become one-hot targets t (float, C wide), "
                  "float labels of shape [N, C] (soft labels, regression targets) are used as they are")
    label_smoothing: float = param(0.0, doc="label smoothing of the cross-entropy (loss = 'ce' only)",
                                   validator=in_range(0, 1, high_open=True))
    shuffle: bool = param(True, doc="reshuffle the training set every epoch; false keeps the dataset order "
                                    "(full-batch or order-sensitive experiments)")
    batch_size: Optional[int] = param(None, doc="training batch size (default: the dataset's)",
                                      validator=positive)

    def __attrs_post_init__(self):
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("'nesterov' needs optimizer = 'sgd' and momentum > 0")
        if list(self.milestones) != sorted(self.milestones) or any(m <= 0 for m in self.milestones):
            raise ValueError(f"'milestones' must be positive and increasing: {list(self.milestones)}")
        if self.milestones and self.schedule != "step":
            raise ValueError("'milestones' only apply to schedule = 'step'")
        if self.label_smoothing > 0 and self.loss != "ce":
            # worded as attrs' validators are, so the loader reports it at the key path
            raise ValueError(f"'label_smoothing' must be 0 with loss = {self.loss!r} (smoothing applies to "
                             f"the cross-entropy only; remove it or set loss = 'ce'): {self.label_smoothing}")


@attrs.define(kw_only=True)
class StandardConfig(TrainConfig):
    """Supervised training (cross-entropy or MSE); logs loss, train and test accuracy per epoch."""

    test_every: int = param(1, doc="test accuracy every N epochs and after the last one (on a distilled set "
                            "an epoch is one step, and testing on the real test split costs far more)",
                            validator=positive)


@attrs.define(kw_only=True)
class AdversarialConfig(TrainConfig):
    """Adversarial training (Madry et al. 2018): train on the attack's examples of each batch."""

    attack: object = component_param(
        "attack", default={"use": "pgd", "eps": 8 / 255, "steps": 7},
        doc="inner maximization: any registered attack, e.g. { use = \"pgd\", eps = 0.03, steps = 7 }")
    bn_mode: Literal["eval", "train"] = param(
        "eval", doc="model mode while the attack runs: 'eval' (default) uses BatchNorm running statistics, "
                    "so the attack does not update them with adversarial batches and each example's "
                    "perturbation does not depend on the rest of the batch; 'train' uses batch statistics "
                    "(and every attack step updates the running statistics)")
    mix: float = param(0.0, doc="weight of the clean loss: (1 - mix) * adversarial + mix * clean",
                       validator=in_range(0, 1))
    keep_perturbations: int = param(
        0, doc="keep the first N (x, x_adv, y) of every epoch, the perturbations training used, for probes "
               "such as the collapse plugin's neural-collapse with train_perturbations = true (0: keep none)",
        validator=non_negative)


def register(register):
    register("standard", "deepscope_standard.trainers:StandardTrainer", StandardConfig,
             doc="Cross-entropy or MSE; SGD/Adam with constant, step or cosine schedule; keeps pruning "
                 "masks applied.")
    register("adversarial", "deepscope_standard.trainers:AdversarialTrainer", AdversarialConfig,
             doc="PGD adversarial training with any registered attack as the inner maximization.")
