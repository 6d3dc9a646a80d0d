"""Config of the ``worst-case`` probe (AutoAttack-style evaluation); no torch import here."""

from __future__ import annotations

from typing import Literal, Optional

import attrs

from deepscope import non_negative, param, positive

#: the attacks the probe can compose, by the names AutoAttack uses
ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square", "pgd")
#: AutoAttack's versions: 'standard' (deterministic models) and 'rand' (randomized defences, EOT 20)
PRESETS = {"standard": ("apgd-ce", "apgd-t", "square"), "autoattack": ("apgd-ce", "apgd-t", "fab-t", "square"),
           "randomized": ("apgd-ce", "apgd-dlr")}


@attrs.define(kw_only=True)
class WorstCaseConfig:
    """Per-example worst case over several attacks and noise draws, as AutoAttack reports robustness."""

    preset: Literal["standard", "autoattack", "randomized", "custom"] = param(
        "standard", doc="'standard': APGD-CE, APGD-T, Square (AutoAttack's standard version minus FAB-T); "
                        "'autoattack': APGD-CE, APGD-T, FAB-T, Square (AutoAttack's standard version); "
                        "'randomized': APGD-CE and APGD-DLR with EOT (AutoAttack's rand version); "
                        "'custom': the list in `attacks`")
    attacks: list[str] = param(factory=list, doc=f"with preset = 'custom': attacks in the order they run, "
                                                 f"from {', '.join(ATTACKS)}")
    norm: Literal["linf", "l2"] = param("linf", doc="threat model of every attack")
    eps: float = param(8 / 255, doc="radius of the perturbation ball, in [0, 1] pixel units",
                       validator=non_negative)
    steps: int = param(100, doc="iterations of each APGD (and PGD) run", validator=positive)
    restarts: int = param(1, doc="runs per attack (and per target class for apgd-t)", validator=positive)
    target_classes: int = param(9, doc="apgd-t and fab-t: the highest-ranked wrong classes attacked in turn (at most "
                                       "the number of classes - 1)", validator=positive)
    queries: int = param(5000, doc="square: model queries per example", validator=positive)
    eot: Optional[int] = param(None, doc="gradient (and margin) samples per step for randomized models; "
                                         "default 20 with preset 'randomized', else 1", validator=positive)
    draws: int = param(1, doc="noise draws on which each result is judged: an example is robust only if "
                              "correct on every draw, for the clean input and every attack",
                       validator=positive)
    sequential: bool = param(True, doc="true: each attack runs only on the examples no earlier attack broke "
                                       "(AutoAttack; cheap); false: every attack on every example, which "
                                       "also gives each attack's own robust accuracy")
    n_examples: Optional[int] = param(1000, doc="evaluate the first N test examples (None: all)",
                                      validator=positive)
    batch_size: int = param(500, doc="examples per batch", validator=positive)
    seed: int = param(0, doc="seed of the attacks' random starts and searches")

    def __attrs_post_init__(self):
        chosen = self.attack_names()
        unknown = [a for a in chosen if a not in ATTACKS]
        if unknown:
            raise ValueError(f"attacks: unknown {unknown}; choose from {list(ATTACKS)}")
        if not chosen:
            raise ValueError("attacks: preset = 'custom' needs a non-empty list, e.g. attacks = "
                             "[\"apgd-ce\", \"square\"]")
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"attacks: a name repeats in {chosen}; raise `restarts` instead")
        if self.preset != "custom" and self.attacks:
            raise ValueError(f"attacks: only read with preset = 'custom' (preset is {self.preset!r}); "
                             "set preset = \"custom\" or drop `attacks`")

    def attack_names(self) -> list[str]:
        return list(self.attacks) if self.preset == "custom" else list(PRESETS[self.preset])

    def eot_samples(self) -> int:
        if self.eot is not None:
            return self.eot
        return 20 if self.preset == "randomized" else 1


def register(register):
    register("worst-case", "deepscope_standard.worst_case:WorstCase", WorstCaseConfig,
             doc="AutoAttack-style robustness: per-example worst case over attacks and noise draws, per-attack table.")
