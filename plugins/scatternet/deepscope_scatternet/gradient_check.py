"""The `gradient-check` probe: does white-box robustness survive attacks that need no gradient?

Two symptoms of gradient masking (Athalye, Carlini & Wagner 2018) are checked
on the same examples: a gradient-free attack (Square) beats white-box PGD at the
same eps, and PGD at a very large eps fails to drive accuracy to ~0 (with eps
0.5 in L-inf any image can be turned into a grey one, so informative gradients
must find an error). Either flags ``masking_suspected = 1``; the evidence is
logged next to it.
"""

from __future__ import annotations

import torch

from deepscope_standard import pgd, square


def correct_over_draws(model, x: torch.Tensor, y: torch.Tensor, draws: int) -> torch.Tensor:
    """(N, draws) booleans: prediction correct on each noise draw."""
    with torch.no_grad():
        return torch.stack([model(x).argmax(1) == y for _ in range(draws)], dim=1)


class GradientCheck:
    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx) -> dict[str, float]:
        cfg = self.config
        x_all, y_all = state.data.tensors("test", cfg.n_examples)
        gen = torch.Generator().manual_seed(cfg.seed)
        hits = {k: [] for k in ("clean", "pgd", "square", "large")}
        with ctx.eval_mode() as model:
            starts = range(0, len(x_all), cfg.batch_size)
            for start in ctx.progress(starts, total=len(starts), description=f"{ctx.prefix}"):
                x = x_all[start:start + cfg.batch_size].to(state.device)
                y = y_all[start:start + cfg.batch_size].to(state.device)
                adv = {
                    "clean": x,
                    "pgd": pgd(model, x, y, eps=cfg.eps, steps=cfg.steps, eot=cfg.eot, generator=gen),
                    "square": square(model, x, y, eps=cfg.eps, queries=cfg.queries, p_init=cfg.p_init, eot=cfg.eot,
                                     generator=gen),
                    "large": pgd(model, x, y, eps=cfg.large_eps, steps=cfg.large_eps_steps, eot=cfg.eot,
                                 generator=gen),
                }
                for key, xa in adv.items():
                    hits[key].append(correct_over_draws(model, xa, y, cfg.draws).cpu())
        return summarize({k: torch.cat(v) for k, v in hits.items()}, cfg.margin, cfg.large_eps_tolerance)


def summarize(hits: dict[str, torch.Tensor], margin: float, tolerance: float) -> dict[str, float]:
    """Accuracies: ``*_acc`` is the mean over noise draws, ``*_acc_worst`` needs every draw correct;
    ``combined_acc`` is the per-example worst of both attacks; and the two flags."""
    acc = {k: v.float().mean().item() for k, v in hits.items()}
    both = (hits["pgd"] & hits["square"]).float().mean().item()
    blackbox_wins = acc["square"] < acc["pgd"] - margin
    large_not_zero = acc["large"] > tolerance
    worst = {f"{'large_eps' if k == 'large' else k}_acc_worst": v.all(1).float().mean().item()
             for k, v in hits.items()}  # correct on every noise draw
    return {
        **worst,
        "clean_acc": acc["clean"],
        "pgd_acc": acc["pgd"],
        "square_acc": acc["square"],
        "combined_acc": both,
        "large_eps_acc": acc["large"],
        "square_minus_pgd": acc["square"] - acc["pgd"],
        "blackbox_beats_whitebox": float(blackbox_wins),
        "large_eps_not_zero": float(large_not_zero),
        "masking_suspected": float(blackbox_wins or large_not_zero),
    }
