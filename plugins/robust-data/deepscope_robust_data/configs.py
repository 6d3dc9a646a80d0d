"""Config classes of the robust-data components (attrs only: cheap to import)."""

from __future__ import annotations

from typing import Literal, Optional

import attrs

from deepscope import ConfigError, ProbeConfig, component_param, non_negative, param, positive
from deepscope_ntk import KernelRegressionConfig, KIPConfig

#: the kernel both components default to: the analytic FC-1 NTK, reg 1e-6, centred one-hot (KIP's notebook)
KRR_DEFAULT = {"use": "kernel-regression", "kernel": "analytic-ntk", "reg": 1e-6, "targets": "centered"}


def check_krr(spec) -> None:
    """A nested ``krr`` must be a kernel-regression (said by validate, before any data is loaded)."""
    if isinstance(spec, dict):  # the default table (a config built in Python keeps it unstructured)
        return
    if not isinstance(spec.config, KernelRegressionConfig):
        raise ConfigError(f"krr must be a kernel-regression model, not {spec.name!r}: write "
                          "krr = { use = \"kernel-regression\", kernel = \"analytic-ntk\", reg = 1e-6 }", key="krr")


@attrs.define(kw_only=True)
class AdversarialKIPConfig(KIPConfig):
    """KIP whose target loss is taken at adversarial points of the current kernel predictor (Danskin)."""

    eps: float = param(0.1, doc="radius of the inner attack's ball in [0, 1] pixel units (0: exactly `kip`)",
                       validator=non_negative)
    norm: Literal["linf", "l2"] = param("linf", doc="the inner attack's threat model")
    attack_steps: int = param(10, doc="inner PGD steps against the closed-form predictor, per restart",
                              validator=positive)
    attack_step_size: Optional[float] = param(None, doc="inner PGD step length (default 2.5 * eps / "
                                              "attack_steps)", validator=positive)
    random_start: bool = param(True, doc="start each restart from a uniformly random point of the ball")
    restarts: int = param(1, doc="inner restarts; every target keeps its highest-loss point over all "
                          "iterates and restarts (never below its clean loss)", validator=positive)
    steps: int = param(100, doc="outer Adam steps (0: the class-balanced real draw itself, the random-real "
                       "baseline on the very images KIP would start from)", validator=non_negative)
    clamp: bool = param(True, doc="clamp the support images to [0, 1] after every step")

    def check(self, shape) -> None:
        check_krr(self.krr)


@attrs.define(kw_only=True)
class SyntheticKRRConfig(ProbeConfig):
    """Kernel regression fitted on a distilled set: clean accuracy, and accuracy under nested attacks."""

    set: str = param("synthetic", doc="the distilled set: \"synthetic\" (the latest, or the current iterate "
                     "in a distill stage's periodic probes) or \"synthetic/<stage name>\"")
    krr: object = component_param("model", default=KRR_DEFAULT,
                                  doc="the kernel-regression fitted on the set (kernel, reg, targets)")
    attacks: object = component_param("attack", default=[{"use": "pgd", "eps": 0.1, "steps": 20}], many=True,
                                      doc="the attacks run against the fitted predictor (any registered ones; "
                                          "their own n_examples/batch_size are ignored: this probe's are used); "
                                          "robust_acc is the per-example worst case over all of them")
    n_test: Optional[int] = param(1000, doc="the first N real test images (none: all)", validator=positive)
    batch_size: int = param(500, doc="test images per attack pass (memory only)", validator=positive)

    def __attrs_post_init__(self):
        if not self.attacks:
            raise ValueError("'attacks' must name at least one attack, e.g. attacks = [{ use = \"pgd\", "
                             "eps = 0.1 }]: []")

    def check(self, shape) -> None:
        check_krr(self.krr)

    def check_stages(self, earlier) -> None:
        """``set`` must name a distilled set that an earlier stage (or the running distill stage) makes."""
        made = [f"synthetic/{stage.label}" for stage in earlier if stage.do == "distill"]
        if (self.set == "synthetic" and made) or self.set in made:
            return
        known = ", ".join(repr(m) for m in made) or "none (no distill stage before this probe)"
        raise ConfigError(f"set = {self.set!r} names no distilled set of an earlier stage; the sets made before "
                          f"this probe: {known}. Write \"synthetic\" (the latest) or one of them.", key="set")
