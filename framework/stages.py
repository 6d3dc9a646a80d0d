"""The core's stage kinds: what ``train``, ``prune``, ``attack``, ``distill`` and ``probe`` mean.

Each runner is registered (``builtin.py``) as a plugin's would be; it is the core's side of
the component contracts in :mod:`deepscope.contracts`.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch

from .bases import AttackConfig, PrunerConfig
from .config import StageSpec
from .data import SyntheticData
from .errors import ConfigError
from .network import mask_sparsity
from .state import RunState, StageContext, run_probe


def run_train(state: RunState, stage: StageSpec, ctx: StageContext) -> None:
    trainer = stage.spec.build()
    trainer.train(state, ctx)
    state.apply_masks()


def run_prune(state: RunState, stage: StageSpec, ctx: StageContext) -> None:
    pruner = stage.spec.build()
    config: PrunerConfig = _config_of(stage, PrunerConfig)
    density, target = config.density, config.target
    resolver_comp = state.host.registry.find("prune-target", target)
    if resolver_comp is None:
        raise ConfigError(state.host.registry.unknown_message("prune-target", target), key="target")
    masks = resolver_comp.resolve_factory()(pruner, state, ctx, density)
    state.set_masks(masks)
    sparsity = mask_sparsity(state.masks, state.model)
    metrics = {"direct_sparsity": sparsity, "achieved_density": 1.0 - sparsity}
    if density is not None:
        metrics["requested_density"] = density
        miss = abs((1.0 - sparsity) - density) / density if density > 0 else 0.0
        if target == "direct" and miss > MISS_TOLERANCE:
            ctx.print(f"[yellow]warning[/]: {stage.key}: pruner {stage.use!r} kept density {1.0 - sparsity:.4g}, "
                      f"{100 * miss:.1f}% off the requested {density:.4g}")
    ctx.log_metrics(metrics)


#: a pruner that misses the requested density by more than this (relative) is reported
MISS_TOLERANCE = 0.01


def prune_direct(pruner, state: RunState, ctx: StageContext, density: float | None) -> dict[str, torch.Tensor]:
    """The default target: the mask itself has the requested density."""
    return pruner.prune(state, ctx, density)


def run_attack(state: RunState, stage: StageSpec, ctx: StageContext) -> None:
    attack = stage.spec.build()
    cfg: AttackConfig = _config_of(stage, AttackConfig)
    n, batch_size, targeted, draws = cfg.n_examples, cfg.batch_size, cfg.targeted, cfg.draws
    setup = getattr(attack, "setup", None)
    if callable(setup):  # surrogates, kernel predictors: fitted once, before the first batch
        setup(state, ctx)
    x_all, y_all = state.data.tensors("test", n)
    model = state.model
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(state.seed + 1)
    num_classes = state.info.num_classes
    clean_hits = torch.zeros(len(x_all), draws, dtype=torch.bool)
    adv_hits = torch.zeros(len(x_all), draws, dtype=torch.bool)
    target_hits = torch.zeros(len(x_all), dtype=torch.bool)
    max_linf = max_l2 = 0.0
    batches = range(0, len(x_all), batch_size)
    for start in ctx.progress(batches, total=len(batches), description=f"{ctx.prefix}"):
        x = x_all[start:start + batch_size].to(state.device)
        y = y_all[start:start + batch_size].to(state.device)
        target = None
        if targeted:
            offset = torch.randint(1, num_classes, (len(y),), generator=gen).to(state.device)
            target = (y + offset) % num_classes
        x_adv = attack.perturb(model, x, y, target=target)
        if model.training:  # the contract: attacks never change model.training
            raise RuntimeError(f"attack {stage.use!r} changed model.training; attacks must restore it")
        delta = (x_adv - x).flatten(1)
        max_linf = max(max_linf, float(delta.abs().max()) if delta.numel() else 0.0)
        max_l2 = max(max_l2, float(delta.norm(dim=1).max()) if delta.numel() else 0.0)
        with torch.no_grad():
            for d in range(draws):
                clean_hits[start:start + len(y), d] = (model(x).argmax(1) == y).cpu()
                pred = model(x_adv).argmax(1)
                adv_hits[start:start + len(y), d] = (pred == y).cpu()
                if target is not None and d == 0:
                    target_hits[start:start + len(y)] = (pred == target).cpu()
    model.train(was_training)
    metrics = {
        "clean_acc": clean_hits.float().mean().item(),
        "robust_acc": adv_hits.float().mean().item(),
        "max_linf": max_linf,
        "max_l2": max_l2,
        "n_examples": float(len(x_all)),
    }
    if draws > 1:  # mean over draws (above) and worst case: correct on every draw
        metrics["clean_acc_worst"] = clean_hits.all(1).float().mean().item()
        metrics["robust_acc_worst"] = adv_hits.all(1).float().mean().item()
    if targeted:
        metrics["target_success"] = target_hits.float().mean().item()
    ctx.log_metrics(metrics)


def run_distill(state: RunState, stage: StageSpec, ctx: StageContext) -> None:
    """Run the distiller and add its set to the run as ``synthetic/<stage name>`` (and the latest)."""
    distiller = stage.spec.build()
    synthetic = distiller.distill(state, ctx)
    if not isinstance(synthetic, SyntheticData):
        raise RuntimeError(f"distiller {stage.use!r} returned {type(synthetic).__name__}, not a SyntheticData")
    synthetic = synthetic.detached()
    state.add_synthetic(stage.label, synthetic)
    ctx.log_metrics({"synthetic_size": float(len(synthetic))}, step=ctx.stage_step or None)
    ctx.log_tensors("synthetic", synthetic.to_dict())


def run_probe_stage(state: RunState, stage: StageSpec, ctx: StageContext) -> None:
    ctx.last_metrics.update(run_probe(state, stage.spec, ctx.prefix, stage))


def _config_of(stage: StageSpec, base: type):
    config = stage.config
    if not isinstance(config, base):  # registration checks this; a hand-built StageSpec may not
        raise TypeError(f"{stage.spec.kind} {stage.use!r}: its config is a {type(config).__name__}, not a "
                        f"deepscope.{base.__name__}")
    return config


def located(runner: Callable[[RunState, StageSpec, StageContext], None]):
    """Locate ConfigErrors a component raises while running under its stage's key path."""

    @functools.wraps(runner)
    def run(state: RunState, stage: StageSpec, ctx: StageContext) -> None:
        try:
            runner(state, stage, ctx)
        except ConfigError as exc:
            raise exc.with_prefix(stage.path) from None

    return run
