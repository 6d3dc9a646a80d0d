"""The ``effective`` prune target: prune so that the *effective* sparsity meets the request.

Bisection over the number of weights the pruner keeps: the smallest direct
budget whose effective mask still keeps the requested number of weights. It
needs only the pruner's ``prune(state, ctx, density)``, so third-party
pruners work too; monotonicity holds when a pruner's masks are nested in the
density (global rankings, quotas growing with density, nested random masks).
About log2 N effective-mask evaluations.
"""

from __future__ import annotations

import math

from deepscope import ConfigError

from .effective import EffectiveMasks, count_kept
from .masking import alive_masks


def prune_effective(pruner, state, ctx, density):
    if density is None:
        raise ValueError("'target' effective needs 'compression' or 'sparsity'")
    alive = alive_masks(state)
    total = sum(m.numel() for m in alive.values())
    wanted = min(total, math.ceil(density * total - 1e-9))  # effective sparsity <= the request
    effective = EffectiveMasks(state.model, state.info.input_shape, list(alive))
    evaluations = 0
    # every attempt starts from the weights at entry, and the model ends as the chosen attempt left it:
    # a pruner may change weights (rewinding, iterative scoring), and attempts must not compound
    entry = _weights(state.model)

    refused: list[ConfigError] = []

    def attempt(kept):
        nonlocal evaluations
        evaluations += 1
        state.model.load_state_dict(entry)
        try:
            masks = pruner.prune(state, ctx, kept / total)
        except ConfigError as exc:  # e.g. a quota that cannot reach so low a density: too few weights
            refused.append(exc)
            return None, -1, None
        merged = {n: alive[n] & masks[n].to(alive[n].device).bool() if n in masks else alive[n] for n in alive}
        return masks, count_kept(effective(merged)), _weights(state.model)

    masks, eff, after = attempt(wanted)
    result, result_weights = masks, after
    if eff < wanted:
        lo = wanted  # effective count too small here
        hi = count_kept(alive)  # keep everything still alive
        best, best_eff, best_weights = attempt(hi)
        if best_eff >= wanted:
            while hi - lo > 1:
                mid = (lo + hi) // 2
                candidate, ceff, cweights = attempt(mid)
                if ceff >= wanted:
                    hi, best, best_eff, best_weights = mid, candidate, ceff, cweights
                else:
                    lo = mid
        result, eff, result_weights = best, best_eff, best_weights
    if result is None:  # refused even when keeping every live weight
        raise refused[-1]
    state.model.load_state_dict(result_weights)
    if ctx is not None:
        ctx.log_metrics({"effective_search_evaluations": float(evaluations),
                         "effective_search_direct_density": count_kept(result) / total,
                         "effective_search_effective_density": eff / total,
                         "effective_search_log2_total": math.log2(max(total, 1))})
    return result


def _weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
