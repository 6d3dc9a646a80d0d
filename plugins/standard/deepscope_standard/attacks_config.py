"""Config classes of the gradient attacks (``fgsm``, ``pgd``); no torch import here."""

from __future__ import annotations

from typing import Literal, Optional

import attrs

from deepscope import AttackConfig, non_negative, param, positive

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
    """Projected gradient descent (Madry et al. 2018), with restarts; keeps each example's best restart."""

    steps: int = param(10, doc="gradient steps per restart", validator=positive)
    step_size: Optional[float] = param(None, doc="step length (default 2.5 * eps / steps, as Madry et al.)",
                                       validator=positive)
    restarts: int = param(1, doc="random restarts; each example keeps its most adversarial one",
                          validator=positive)
    random_start: bool = param(True, doc="start from a uniformly random point of the ball")


def register(register):
    register("fgsm", "deepscope_standard.attacks:FGSM", FGSMConfig,
             doc="Fast gradient sign method (one step; linf or l2), untargeted or targeted.")
    register("pgd", "deepscope_standard.attacks:PGD", PGDConfig,
             doc="Projected gradient descent (linf or l2) with restarts and EOT, untargeted or targeted.")
