"""The ``worst-case`` probe: robustness as AutoAttack reports it, per example, over attacks and draws.

A probe rather than an attack: the attack stage judges one perturbed input per example,
whereas the worst case needs every attack's input judged on every noise draw; the
probe also logs the per-attack table. An example counts as robust only if the model
is right on the clean input and on each attack's output, on every one of ``draws``
noise draws. With ``sequential`` (AutoAttack's order) an attack runs only on the
examples that survived the earlier ones, so the table gives the robust accuracy left
after each attack and the fraction each one broke; otherwise every attack runs on
every example and its own robust accuracy is logged too.
"""

from __future__ import annotations

import torch

from .attacks import pgd
from .autopgd import apgd
from .fab import fab
from .square_attack import square


def run_attack(name: str, model, x, y, cfg, eot: int, gen: torch.Generator) -> torch.Tensor:
    """One of the composable attacks with the probe's settings."""
    common = dict(eps=cfg.eps, norm=cfg.norm, eot=eot, generator=gen)
    if name == "apgd-ce":
        return apgd(model, x, y, steps=cfg.steps, restarts=cfg.restarts, loss="ce", **common)
    if name == "apgd-dlr":
        return apgd(model, x, y, steps=cfg.steps, restarts=cfg.restarts, loss="dlr", **common)
    if name == "apgd-t":
        return apgd(model, x, y, steps=cfg.steps, restarts=cfg.restarts, loss="dlr",
                    target_classes=cfg.target_classes, **common)
    if name == "fab-t":
        return fab(model, x, y, eps=cfg.eps, norm=cfg.norm, steps=cfg.steps, restarts=cfg.restarts,
                   target_classes=cfg.target_classes, generator=gen)
    if name == "square":
        return square(model, x, y, queries=cfg.queries, **common)
    if name == "pgd":
        return pgd(model, x, y, steps=cfg.steps, restarts=cfg.restarts, **common)
    raise ValueError(f"unknown attack {name!r}")


def correct_on_every_draw(model, x: torch.Tensor, y: torch.Tensor, draws: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(right on every draw, fraction of draws right), per example."""
    with torch.no_grad():
        hits = torch.stack([model(x).argmax(1) == y for _ in range(draws)], dim=1)
    return hits.all(1), hits.float().mean(1)


def evaluate(model, x: torch.Tensor, y: torch.Tensor, cfg, gen: torch.Generator) -> dict:
    """Per-example outcomes of one batch: clean and per-attack correctness, and which attack broke it first."""
    names, eot = cfg.attack_names(), cfg.eot_samples()
    robust, clean_rate = correct_on_every_draw(model, x, y, cfg.draws)
    out = {"clean": robust.clone(), "clean_rate": clean_rate, "broken_by": torch.full((len(x),), -1),
           "own": {}, "attacked": {}}
    for i, name in enumerate(names):
        idx = robust.nonzero().flatten() if cfg.sequential else torch.arange(len(x), device=x.device)
        own = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        if len(idx):
            x_adv = run_attack(name, model, x[idx], y[idx], cfg, eot, gen)
            own[idx] = correct_on_every_draw(model, x_adv, y[idx], cfg.draws)[0]
        if not cfg.sequential:
            out["own"][name] = own & out["clean"]
        newly = robust & ~own
        out["broken_by"][newly.cpu()] = i
        out["attacked"][name] = len(idx)
        robust = robust & own
    out["robust"] = robust
    return out


class WorstCase:
    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx) -> dict[str, float]:
        from deepscope import ConfigError

        cfg = self.config
        names = cfg.attack_names()
        if "apgd-t" in names and cfg.target_classes > state.info.num_classes - 1:
            raise ConfigError(f"target_classes = {cfg.target_classes} but the data has {state.info.num_classes} "
                              f"classes; use at most {state.info.num_classes - 1}", key="target_classes")
        if state.info.num_classes < (4 if "apgd-t" in names else 3) and {"apgd-dlr", "apgd-t"} & set(names):
            raise ConfigError("the dlr loss (apgd-dlr, apgd-t) needs at least 3 classes (4 for apgd-t); use "
                              "preset = \"custom\" with apgd-ce, pgd or square", key="preset")
        x_all, y_all = state.data.tensors("test", cfg.n_examples)
        gen = torch.Generator().manual_seed(cfg.seed)
        parts = []
        with ctx.eval_mode() as model:
            starts = range(0, len(x_all), cfg.batch_size)
            for start in ctx.progress(starts, total=len(starts), description=f"{ctx.prefix}"):
                x = x_all[start:start + cfg.batch_size].to(state.device)
                y = y_all[start:start + cfg.batch_size].to(state.device)
                parts.append(evaluate(model, x, y, cfg, gen))
        metrics, rows = summarize(parts, names, cfg.sequential)
        ctx.log_table("worst_case", rows)
        return metrics


def summarize(parts: list[dict], names: list[str], sequential: bool) -> tuple[dict[str, float], list[dict]]:
    """Metrics and the per-attack table from the batches' per-example outcomes."""
    clean = torch.cat([p["clean"].cpu() for p in parts]).float()
    robust = torch.cat([p["robust"].cpu() for p in parts]).float()
    broken_by = torch.cat([p["broken_by"] for p in parts])
    n = max(len(clean), 1)
    metrics = {"clean_acc": torch.cat([p["clean_rate"].cpu() for p in parts]).mean().item(),
               "clean_acc_worst": clean.mean().item(), "robust_acc": robust.mean().item(),
               "n_examples": float(len(clean))}
    rows, left = [], clean.sum().item()
    for i, name in enumerate(names):
        key = name.replace("-", "_")
        broke = (broken_by == i).sum().item()
        left -= broke
        row = {"attack": name, "attacked": sum(p["attacked"][name] for p in parts), "broke": broke / n,
               "robust_acc_after": left / n}
        metrics[f"{key}_broke"] = broke / n
        metrics[f"{key}_acc_after"] = left / n
        if not sequential:
            own = torch.cat([p["own"][name].cpu() for p in parts]).float().mean().item()
            row["robust_acc"] = own
            metrics[f"{key}_acc"] = own
        rows.append(row)
    rows.append({"attack": "worst case", "robust_acc_after": metrics["robust_acc"],
                 **({"robust_acc": metrics["robust_acc"]} if not sequential else {})})
    return metrics, rows
