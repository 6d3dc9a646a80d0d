"""Config classes of the collapse plugin (attrs only: cheap to import, no torch)."""

from __future__ import annotations

from typing import Literal, Optional

import attrs

from deepscope import component_param, non_negative, param, positive
from deepscope_standard import TrainConfig


@attrs.define(kw_only=True)
class PerturbationParams:
    """What the probes measure on besides clean data: an attack and/or a random-noise baseline."""

    attack: Optional[object] = component_param(
        "attack", None,
        doc="registered attack for the perturbed set, e.g. { use = \"pgd\", eps = 0.1, steps = 10 }; "
            "run in eval mode; omit for clean data only")
    targeted: bool = param(False, doc="attack towards (y + 1) mod C and compute NC with the target labels")
    noise: Optional[Literal["gaussian", "sign"]] = param(
        None, doc="random-noise baseline: 'gaussian' (x + eps * N(0, I)) or 'sign' (x +- eps), clamped to [0, 1]")
    noise_eps: Optional[float] = param(
        None, doc="noise size (default: the attack's eps)", validator=positive)
    n_examples: Optional[int] = param(None, doc="use the first N examples of the split (default: all)",
                                      validator=positive)
    batch_size: int = param(256, doc="examples per forward / attack batch", validator=positive)
    layers: Literal["penultimate", "all"] = param(
        "penultimate", doc="'penultimate' (classifier input) or 'all' (every block's output, then the "
                           "penultimate layer)")
    spatial: Literal["avg", "flatten"] = param(
        "avg", doc="how 4-d block outputs become vectors: 'avg' pools over H x W (one value per channel), "
                   "'flatten' keeps every unit")

    def check_noise(self) -> None:
        if self.noise is not None and self.noise_eps is None:
            eps = getattr(getattr(self.attack, "config", None), "eps", None)
            if eps is None:
                raise ValueError("'noise_eps' is required when 'noise' is set and the attack has no eps")
        if self.targeted and self.attack is None:
            raise ValueError("'targeted' needs an 'attack'")


@attrs.define(kw_only=True)
class NeuralCollapseConfig(PerturbationParams):
    """NC1-NC4 on clean, perturbed and noisy data (Su et al., 2023; Papyan et al., 2020)."""

    split: Literal["train", "test"] = param(
        "train", doc="data to measure on; the paper measures on the training data (as trained on)")
    divide_by_classes: bool = param(
        True, doc="NC1 = Tr(Sw Sb^+) / C (PNAS definition); false gives Tr(Sw Sb^+) as in the "
                  "robust_neural_collapse and Papyan/Han code")
    plots: bool = param(True, doc="log the NC trajectory (and per-layer profile) as PNG artifacts")
    train_perturbations: bool = param(
        False, doc="also measure on the x_adv the trainer made in its last epoch (set 'train_adv'), as the "
                   "official code does for PGD-AT and TRADES; needs a trainer with keep_perturbations > 0")

    def __attrs_post_init__(self):
        self.check_noise()


@attrs.define(kw_only=True)
class NCCAccuracyConfig(PerturbationParams):
    """Nearest-class-centre accuracy with centres from clean data (the paper's robust simple classifier)."""

    centre_split: Literal["train", "test"] = param("train", doc="split whose clean features give the centres")
    n_centre: Optional[int] = param(None, doc="examples of centre_split used for the centres (default: all)",
                                    validator=positive)
    split: Literal["train", "test"] = param("test", doc="split the classifiers are evaluated on")

    def __attrs_post_init__(self):
        self.check_noise()


@attrs.define(kw_only=True)
class TradesConfig(TrainConfig):
    """TRADES (Zhang et al., 2019) as in robust_neural_collapse: CE(clean) + beta * KL(clean || adversarial).

    Optimizer, schedule and length come from the standard plugin's ``TrainConfig``;
    the reference recipe is SGD lr 0.1, momentum 0.9, weight decay 5e-4 with
    schedule = "step" and milestones at 25% and 37.5% of the epochs.
    """

    # TrainConfig's `loss` narrowed: the clean term of TRADES is the cross-entropy
    loss: Literal["ce"] = param("ce", doc="TRADES's clean term is the cross-entropy ('ce' only; 'mse' is for "
                                          "the standard trainer)")
    beta: float = param(6.0, doc="weight of the KL robustness term", validator=non_negative)
    eps: float = param(8 / 255, doc="radius of the inner maximization (inputs in [0, 1])", validator=non_negative)
    step_size: Optional[float] = param(None, doc="inner step size (default 2 * eps / steps, so an L2 step "
                                                 "scales with eps; the reference CIFAR recipe sets 2/255)",
                                       validator=positive)
    steps: int = param(10, doc="inner KL-ascent steps", validator=positive)
    norm: Literal["linf", "l2"] = param("linf", doc="threat model of the inner maximization")
    init_std: float = param(0.001, doc="start the inner ascent at x + init_std * N(0, I)", validator=non_negative)
    keep_perturbations: int = param(
        0, doc="keep the first N (x, x_adv, y) of every epoch for the neural-collapse probe's "
               "train_perturbations set (0: keep none)", validator=non_negative)
    clamp_start: bool = param(False, doc="project the random start onto [0, 1] before the first gradient (the "
                                         "references do not: false)")
    attack_bn: Literal["eval", "train", "reference"] = param(
        "eval", doc="BN/dropout mode during the inner maximization: 'eval' (clean default; the outer loss runs "
                    "in train mode), 'train' (batch statistics, updates running stats), 'reference' (eval mode "
                    "for the whole step, as the official code's attack_trades leaves it)")
