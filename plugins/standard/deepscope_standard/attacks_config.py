"""Config classes of the attacks (``fgsm``, ``pgd``, ``apgd``, ``square``, ``fab``...); no torch import here."""

from __future__ import annotations

from typing import Literal, Optional

import attrs

from deepscope import AttackConfig, component_param, in_range, non_negative, param, positive

Norm = Literal["linf", "l2"]
Loss = Literal["ce", "margin"]
Autocast = Literal["off", "bf16", "fp16"]


@attrs.define(kw_only=True)
class GradientAttackConfig(AttackConfig):
    """What every gradient attack shares: the threat model and how gradients are taken."""

    norm: Norm = param("linf", doc="threat model: 'linf' (sign steps) or 'l2' (normalized-gradient steps)")
    eps: float = param(8 / 255, doc="radius of the perturbation ball, in [0, 1] pixel units",
                       validator=non_negative)
    eot: int = param(1, doc="gradient samples averaged per step (expectation over transformation, "
                            "for stochastic models); 1 for deterministic models", validator=positive)
    loss: Loss = param("ce", doc="'ce' (cross-entropy) or 'margin' (Carlini-Wagner logit margin)")
    autocast: Autocast = param("off", doc="mixed precision for the forward/backward passes "
                                          "(CUDA only; ignored on CPU)")
    channels_last: bool = param(False, doc="feed inputs in channels_last memory format (CUDA only; "
                                           "helps when the model is channels_last too)")


@attrs.define(kw_only=True)
class FGSMConfig(GradientAttackConfig):
    """Fast gradient sign method: one step of size eps (Goodfellow et al. 2015)."""


@attrs.define(kw_only=True)
class PGDConfig(GradientAttackConfig):
    """Projected gradient descent (Madry et al. 2018), with restarts.

    Each example keeps the final iterate of one restart: of those that fool the model the
    one with the highest objective, else the highest-objective one (``apgd`` tracks the
    best iterate within a run as well).
    """

    steps: int = param(10, doc="gradient steps per restart", validator=positive)
    step_size: Optional[float] = param(None, doc="step length (default 2.5 * eps / steps, as Madry et al.)",
                                       validator=positive)
    restarts: int = param(1, doc="random restarts; each example keeps the final iterate of its most "
                                 "adversarial restart (a fooling one first, then the highest objective)",
                          validator=positive)
    random_start: bool = param(True, doc="start from a uniformly random point of the ball")


@attrs.define(kw_only=True)
class APGDConfig(GradientAttackConfig):
    """Auto-PGD (Croce & Hein 2020): adaptive step size, momentum, best-iterate tracking; APGD-T via target_classes."""

    loss: Literal["ce", "dlr", "margin"] = param("ce", doc="'ce', 'dlr' (difference of logits ratio; needs "
                                                           ">= 3 classes, 4 when targeted) or 'margin'")
    steps: int = param(100, doc="iterations per run (AutoAttack: 100)", validator=positive)
    restarts: int = param(1, doc="runs per target (random starts on the eps-sphere); each attacks only the "
                                 "examples not fooled yet", validator=positive)
    rho: float = param(0.75, doc="checkpoint rule: halve the step when the loss rose in at most this "
                                 "fraction of the window's steps", validator=in_range(0, 1, low_open=True,
                                                                                       high_open=True))
    target_classes: int = param(0, doc="APGD-T: > 0 runs targeted attacks towards each of this many "
                                       "highest-ranked wrong classes (AutoAttack: 9); 0 is untargeted",
                                validator=non_negative)
    seed: int = param(0, doc="seed of the random starts")


@attrs.define(kw_only=True)
class SquareConfig(AttackConfig):
    """Square attack (Andriushchenko et al. 2020): gradient-free random search, L-inf or L2, untargeted."""

    norm: Norm = param("linf", doc="threat model: 'linf' (+-eps squares) or 'l2' (windows of mass moved "
                                   "between places)")
    eps: float = param(8 / 255, doc="radius of the perturbation ball, in [0, 1] pixel units",
                       validator=non_negative)
    queries: int = param(5000, doc="model queries per example (one initial + one per iteration; "
                                   "AutoAttack: 5000)", validator=positive)
    p_init: float = param(0.8, doc="initial fraction of pixels per square, halved on the reference "
                                   "schedule (AutoAttack: 0.8)", validator=in_range(0, 1, low_open=True))
    eot: int = param(1, doc="noise draws averaged per margin evaluation (stochastic models)", validator=positive)
    seed: int = param(0, doc="seed of the random search")


@attrs.define(kw_only=True)
class FABConfig(AttackConfig):
    """FAB (Croce & Hein 2020): the minimally distorted adversarial example by projections onto the
    linearized boundary; FAB-T (AutoAttack's) over the top-k wrong classes; L-inf or L2."""

    norm: Norm = param("linf", doc="the norm whose smallest adversarial perturbation is sought")
    eps: float = param(8 / 255, doc="an example counts as broken when the closest adversarial point found "
                                    "lies within this radius", validator=non_negative)
    steps: int = param(100, doc="iterations per target and restart (AutoAttack: 100)", validator=positive)
    restarts: int = param(1, doc="runs per target; the later ones start at a random point at eps / 2 and "
                                 "attack only the examples not broken yet", validator=positive)
    target_classes: int = param(9, doc="FAB-T: the highest-ranked wrong classes attacked in turn (AutoAttack: "
                                       "9); 0 is untargeted FAB (the nearest boundary at each step, one "
                                       "gradient per class)", validator=non_negative)
    alpha_max: float = param(0.1, doc="largest weight of the input's projection in each step's combination",
                             validator=in_range(0, 1))
    eta: float = param(1.05, doc="overshoot past the linearized boundary", validator=positive)
    beta: float = param(0.9, doc="backward step towards the input after each success", validator=in_range(0, 1))
    seed: int = param(0, doc="seed of the random restarts")


@attrs.define(kw_only=True)
class TransferConfig(GradientAttackConfig):
    """Transfer attack: APGD or PGD on a surrogate trained in setup; the attacked model is never queried."""

    surrogate: object = component_param("model", default={"use": "lenet-5"},
                                        doc="the surrogate's architecture: any registered model, e.g. "
                                            "{ use = \"resnet-18\" }; trained from scratch in setup")
    method: Literal["apgd", "pgd"] = param("apgd", doc="the white-box attack run on the surrogate")
    steps: int = param(50, doc="iterations of that attack", validator=positive)
    epochs: int = param(5, doc="surrogate training: epochs of Adam on the run's training set", validator=positive)
    lr: float = param(1e-3, doc="surrogate training: Adam's learning rate", validator=positive)
    train_batch_size: int = param(128, doc="surrogate training: batch size", validator=positive)
    n_train: Optional[int] = param(None, doc="surrogate training: the first N training examples (default all)",
                                   validator=positive)
    seed: int = param(0, doc="seed of the surrogate's initialization, its training and the attack's starts")


def register(register):
    register("fgsm", "deepscope_standard.attacks:FGSM", FGSMConfig,
             doc="Fast gradient sign method (one step; linf or l2), untargeted or targeted.")
    register("pgd", "deepscope_standard.attacks:PGD", PGDConfig,
             doc="Projected gradient descent (linf or l2) with restarts and EOT, untargeted or targeted.")
    register("apgd", "deepscope_standard.autopgd:APGD", APGDConfig,
             doc="Auto-PGD (linf or l2; ce, dlr; APGD-T over the top-k classes) with restarts and EOT.")
    register("transfer", "deepscope_standard.transfer:TransferAttack", TransferConfig,
             doc="Transfer attack: APGD/PGD on a surrogate trained in setup; never queries the attacked model.")
    register("fab", "deepscope_standard.fab:FAB", FABConfig,
             doc="FAB-T / FAB (linf or l2): minimal adversarial perturbations by boundary projections; "
                 "AutoAttack's standard version uses FAB-T.")
    register("square", "deepscope_standard.square_attack:SquareAttack", SquareConfig,
             doc="Square attack (linf or l2; gradient-free random search; AutoAttack's 5000 queries, p_init 0.8).")
