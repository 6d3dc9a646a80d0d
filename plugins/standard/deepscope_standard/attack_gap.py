"""The ``attack-gap`` probe: how much a reference attack (PGD) overstates robustness.

It attacks nothing itself: it reads the final metrics the earlier attack stages logged
(``state.latest``, which checkpoints carry, so a resumed run still has them) and logs
``reference_robust_acc``, ``worst_alternative_robust_acc`` and ``gap`` (reference minus
worst alternative; positive means the reference attack overstates robustness), plus a
per-attack table. Which stages it compares is decided by ``select_attacks``, the same
function ``deepscope validate`` runs through ``check_stages``.
"""

from __future__ import annotations

from .attack_gap_config import select_attacks


class AttackGap:
    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx) -> dict[str, float]:
        cfg = self.config
        here = ctx.stage.index if ctx.stage is not None else len(state.pipeline.stages)
        earlier = [s for s in state.pipeline.stages if s.index < here]
        if ctx.stage is not None and ctx.stage.spec.kind != "probe":  # periodic: the running stage comes last
            earlier.append(ctx.stage)                                 # (as check_stages saw it)
        reference, alternatives = select_attacks(cfg, earlier)
        values = {s.index: _logged(state, s, cfg.metric) for s in (reference, *alternatives)}
        counts = {s.index: state.latest.get(f"{s.key}/n_examples") for s in (reference, *alternatives)}
        if len(set(counts.values())) > 1:  # the configs agree (validate checks), the logged counts must too
            raise RuntimeError(f"{ctx.prefix}: the compared attack stages attacked different numbers of examples: "
                               f"{counts}")
        worst = min(alternatives, key=lambda s: values[s.index])  # the first of equals, in pipeline order
        ref_value, worst_value = values[reference.index], values[worst.index]
        rows = [{"attack": s.label, "stage": s.index, "use": s.use,
                 "role": "reference" if s is reference else "alternative", cfg.metric: values[s.index],
                 "gap": ref_value - values[s.index], "worst": s is worst}
                for s in (reference, *alternatives)]
        ctx.log_table("attack_gap", rows)
        ctx.print(f"  [dim]{ctx.prefix}[/] {reference.label} {cfg.metric} {ref_value:.4f}, worst alternative "
                  f"{worst.label} {worst_value:.4f}, gap {ref_value - worst_value:+.4f}")
        return {"reference_robust_acc": ref_value, "worst_alternative_robust_acc": worst_value,
                "gap": ref_value - worst_value, "n_alternatives": float(len(alternatives))}


def _logged(state, stage, metric: str) -> float:
    key = f"{stage.key}/{metric}"
    if key not in state.latest:
        raise RuntimeError(f"attack stage {stage.index} ({stage.label!r}) logged no {key}; the attack-gap probe "
                           "reads the metrics that earlier attack stages logged")
    return float(state.latest[key])
