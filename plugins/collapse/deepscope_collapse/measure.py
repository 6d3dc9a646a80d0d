"""Data sets the probes measure on (clean, attacked, noisy) and the two streaming passes over them."""

from __future__ import annotations

from typing import Any

import torch

from .leap import LeapAccumulator
from .metrics import MeanAccumulator, ScatterAccumulator
from .taps import FeatureTaps


def target_labels(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The paper's targeted attack: every example towards (y + 1) mod C."""
    return (y + 1) % num_classes


def attacked_inputs(attack: Any, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                    target: torch.Tensor | None, batch_size: int, device: torch.device) -> torch.Tensor:
    """Perturb ``x`` batch by batch with the model in eval mode; returns CPU inputs in [0, 1]."""
    was = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(device)
            yb = y[start:start + batch_size].to(device)
            tb = None if target is None else target[start:start + batch_size].to(device)
            out.append(attack.perturb(model, xb, yb, target=tb).detach().cpu())
    finally:
        model.train(was)
    return torch.cat(out) if out else x.clone()


def noisy_inputs(x: torch.Tensor, kind: str, eps: float, generator: torch.Generator) -> torch.Tensor:
    """Random baselines of the reference's eval.py: x + eps N(0, I) or x +- eps, clamped to [0, 1]."""
    if kind == "gaussian":
        noise = eps * torch.randn(x.shape, generator=generator)
    elif kind == "sign":
        noise = eps * (torch.randint(0, 2, x.shape, generator=generator) * 2 - 1).to(x.dtype)
    else:
        raise ValueError(f"'noise' must be 'gaussian' or 'sign': {kind!r}")
    return (x + noise).clamp(0.0, 1.0)


@torch.no_grad()
def class_means(taps: FeatureTaps, x: torch.Tensor, labels: torch.Tensor, num_classes: int, batch_size: int,
                device: torch.device) -> dict[str, MeanAccumulator]:
    """Pass 1: per-layer class means."""
    accs = {name: MeanAccumulator(num_classes) for name in taps.names}
    for start in range(0, len(x), batch_size):
        _, feats = taps(x[start:start + batch_size].to(device))
        lb = labels[start:start + batch_size].to(device)
        for name, acc in accs.items():
            acc.update(feats[name], lb)
    return accs


@torch.no_grad()
def scatter(taps: FeatureTaps, means: dict[str, MeanAccumulator], x: torch.Tensor, labels: torch.Tensor,
            batch_size: int, device: torch.device) -> tuple[dict[str, ScatterAccumulator], float]:
    """Pass 2: per-layer projected within-class scatter and NCC predictions; also the network's accuracy."""
    accs = {name: ScatterAccumulator(m) for name, m in means.items()}
    hits = 0
    for start in range(0, len(x), batch_size):
        logits, feats = taps(x[start:start + batch_size].to(device))
        lb = labels[start:start + batch_size].to(device)
        hits += int((logits.argmax(1) == lb).sum())
        for name, acc in accs.items():
            acc.update(feats[name], lb, logits)
    return accs, hits / max(1, len(x))


@torch.no_grad()
def leaps(taps: FeatureTaps, clean_means: dict[str, MeanAccumulator], x: torch.Tensor, x_adv: torch.Tensor,
          y: torch.Tensor, batch_size: int, device: torch.device) -> dict[str, LeapAccumulator]:
    """Per-layer leap counts of perturbed inputs against the clean class means (true labels ``y``).

    ``x`` are the clean inputs row for row: an example counts as fooled only if its clean input is
    classified right.
    """
    accs = {name: LeapAccumulator(m) for name, m in clean_means.items()}
    for start in range(0, len(x_adv), batch_size):
        clean_logits = taps.network(x[start:start + batch_size].to(device))
        logits, feats = taps(x_adv[start:start + batch_size].to(device))
        lb = y[start:start + batch_size].to(device)
        for name, acc in accs.items():
            acc.update(feats[name], lb, logits, clean_logits)
    return accs
