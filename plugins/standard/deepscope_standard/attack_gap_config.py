"""Config of the ``attack-gap`` probe and the choice of the attack stages it compares; no torch here.

The choice is a pure function of the stages before the probe, so ``check_stages`` (run by
``deepscope validate``) and the probe at run time pick exactly the same stages.
"""

from __future__ import annotations

import difflib
from typing import Literal

import attrs

from deepscope import AttackConfig, ConfigError, param

#: stage kinds that change the model: an attack before one of them measured another model
MODEL_CHANGING = ("train", "prune")


@attrs.define(kw_only=True)
class AttackGapConfig:
    """Gap between a reference attack's robust accuracy and the worst of the alternative attacks run before."""

    reference: str = param("pgd", doc="label (stage name, else its `use`) of the earlier attack stage whose "
                                      "robust accuracy is the reference")
    alternatives: list[str] = param(factory=list, doc="labels of the attack stages compared with it; empty: "
                                                      "every other attack stage since the model last changed "
                                                      "(train or prune stage)")
    metric: Literal["robust_acc", "robust_acc_worst"] = param(
        "robust_acc", doc="the attack stages' metric compared: 'robust_acc' (mean over draws) or "
                          "'robust_acc_worst' (right on every draw; needs draws > 1 on every compared stage)")
    allow_mixed_eps: bool = param(False, doc="compare attack stages whose threat models (eps or norm) differ "
                                             "(otherwise a configuration error)")

    def check_stages(self, earlier: list) -> None:
        select_attacks(self, earlier)


def select_attacks(config: AttackGapConfig, earlier: list) -> tuple[object, list]:
    """(the reference attack stage, the alternative attack stages) among ``earlier``; a ConfigError if unfair."""
    attacks = [s for s in earlier if isinstance(s.config, AttackConfig)]
    reference = _resolve(config.reference, "reference", attacks, earlier)
    if config.alternatives:
        if config.reference in config.alternatives or reference.label in config.alternatives:
            raise ConfigError(f"{config.reference!r} is the reference; it cannot be an alternative too: drop it "
                              "from `alternatives`", key="alternatives")
        repeated = sorted({a for a in config.alternatives if config.alternatives.count(a) > 1})
        if repeated:
            raise ConfigError(f"{', '.join(map(repr, repeated))} listed more than once; list each attack stage "
                              "once", key="alternatives")
        alternatives = [_resolve(a, "alternatives", attacks, earlier) for a in config.alternatives]
    else:
        since = max((s.index for s in earlier if s.do in MODEL_CHANGING), default=-1)
        latest = {s.label: s for s in attacks if s.index > since}  # a label repeated: its latest stage
        alternatives = [s for s in latest.values() if s.label != reference.label]
        if not alternatives:
            raise ConfigError(f"no attack stage other than {reference.label!r} (stage {reference.index}) runs on "
                              "the same model before this probe, so there is no gap to measure: add attack "
                              "stages such as square or transfer before it, or list them in `alternatives`",
                              key="alternatives")
    _check_fair(config, reference, alternatives)
    return reference, alternatives


def _resolve(label: str, key: str, attacks: list, earlier: list):
    """The latest earlier attack stage with this label (or, failing that, this `use`)."""
    found = [s for s in attacks if s.label == label]
    if not found:
        found = [s for s in attacks if s.use == label]
        labels = sorted({s.label for s in found})
        if len(labels) > 1:
            raise ConfigError(f"{label!r} is the `use` of several attack stages ({', '.join(map(repr, labels))}); "
                              "write the stage's name instead", key=key)
    if not found:
        labels = list(dict.fromkeys(s.label for s in attacks))
        close = difflib.get_close_matches(label, labels, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = ", ".join(repr(x) for x in labels) or "none"
        raise ConfigError(f"no attack stage before this one is labelled {label!r}{hint}; the earlier attack "
                          f"stages are: {known}. Give the label (name, or `use`) of an earlier "
                          "do = \"attack\" stage", key=key)
    stage = found[-1]
    changer = next((s for s in earlier if s.do in MODEL_CHANGING and s.index > stage.index), None)
    if changer is not None:
        raise ConfigError(f"stage {changer.index} (do = \"{changer.do}\") changes the model after attack stage "
                          f"{stage.index} ({stage.label!r}), so that attack measured another model: move this "
                          f"probe before stage {changer.index}, or repeat the attack after it", key=key)
    return stage


def _check_fair(config: AttackGapConfig, reference, alternatives: list) -> None:
    """Every compared stage attacks the same examples in the same threat model and logs the metric."""
    compared = [reference, *alternatives]
    if config.metric == "robust_acc_worst":
        single = [s for s in compared if s.config.draws < 2]
        if single:
            raise ConfigError(f"metric = \"robust_acc_worst\" is logged only with draws > 1, and attack stage(s) "
                              f"{_list(single)} have draws = 1: set draws > 1 there, or use metric = "
                              "\"robust_acc\"", key="metric")
    for stage in alternatives:
        if stage.config.n_examples != reference.config.n_examples:
            raise ConfigError(f"attack stage {stage.index} ({stage.label!r}) attacks n_examples = "
                              f"{_count(stage)} but the reference, stage {reference.index} ({reference.label!r}), "
                              f"attacks {_count(reference)}; the gap compares like with like: give every compared "
                              "attack stage the same n_examples", key="alternatives")
        if not config.allow_mixed_eps and _threat(stage) != _threat(reference):
            raise ConfigError(f"attack stage {stage.index} ({stage.label!r}) attacks in {_describe(stage)} but the "
                              f"reference, stage {reference.index} ({reference.label!r}), in {_describe(reference)}: "
                              "give every compared attack stage the same eps and norm, or set "
                              "allow_mixed_eps = true", key="alternatives")


def _threat(stage) -> tuple:
    """(norm, eps) of an attack stage; a wrapper without its own eps (``ntk-transfer``) has its nested
    ``attack``'s threat model."""
    config = stage.config
    if getattr(config, "eps", None) is None:
        nested = getattr(config, "attack", None)
        if isinstance(nested, dict):  # the default table of a nested attack
            return nested.get("norm", "linf"), nested.get("eps")
        if nested is not None and hasattr(nested, "config"):
            config = nested.config
    return getattr(config, "norm", None), getattr(config, "eps", None)


def _describe(stage) -> str:
    norm, eps = _threat(stage)
    return f"norm = {norm!r}, eps = {eps!r}" if norm is not None else f"eps = {eps!r}"


def _count(stage) -> str:
    n = stage.config.n_examples
    return "all (None)" if n is None else str(n)


def _list(stages: list) -> str:
    return ", ".join(f"{s.index} ({s.label!r})" for s in stages)


def register(register):
    register("attack-gap", "deepscope_standard.attack_gap:AttackGap", AttackGapConfig,
             doc="Gap between a reference attack's robust accuracy (pgd) and the worst alternative attack's.")
