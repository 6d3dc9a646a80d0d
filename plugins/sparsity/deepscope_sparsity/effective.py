"""Effective masks: the unpruned weights that still lie on an input-to-output path."""

from __future__ import annotations

import math

import torch
from torch import nn

from .linearize import LinearizedNetwork


class EffectiveMasks:
    """Computes effective masks of one architecture for any number of masks.

    The linearized copy is built once; each call costs one forward and one
    backward pass in float64, with values and gradients reset to 0/1 after
    every weighted layer so that no depth can underflow or overflow them.
    """

    def __init__(self, model: nn.Module, input_shape, names=None):
        self.linear = LinearizedNetwork(model, input_shape, names)
        self.names = self.linear.names
        self.shapes = {n: p.shape for n, p in self.linear.params.items()}

    def __call__(self, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        device = self.linear.device
        full = {n: (masks[n].to(device).bool() if n in masks else torch.ones(s, dtype=torch.bool, device=device))
                for n, s in self.shapes.items()}
        grads = self.linear.gradients({n: m.double() for n, m in full.items()}, binarize=True)
        return {n: full[n] & (grads[n] != 0) for n in self.names}


def effective_masks(model: nn.Module, masks: dict[str, torch.Tensor], input_shape, names=None):
    """One-off effective masks of ``model`` (a deep copy is linearized; the model is untouched)."""
    return EffectiveMasks(model, input_shape, names)(masks)


def count_kept(masks: dict[str, torch.Tensor]) -> int:
    return int(sum(int(m.sum()) for m in masks.values()))


def sparsity_report(masks: dict[str, torch.Tensor], effective: dict[str, torch.Tensor]) -> dict[str, float]:
    """Direct and effective sparsity and compression, overall and per layer."""
    total = sum(m.numel() for m in effective.values())
    direct_kept = effective_kept = 0
    report: dict[str, float] = {}
    for name, eff in effective.items():
        mask = masks.get(name)
        kept = eff.numel() if mask is None else int(mask.bool().sum())
        ekept = int(eff.sum())
        direct_kept += kept
        effective_kept += ekept
        report[f"direct_sparsity/{name}"] = 1.0 - kept / eff.numel()
        report[f"effective_sparsity/{name}"] = 1.0 - ekept / eff.numel()
    report["direct_sparsity"] = 1.0 - direct_kept / total
    report["effective_sparsity"] = 1.0 - effective_kept / total
    report["direct_compression"] = compression(direct_kept, total)
    report["effective_compression"] = compression(effective_kept, total)
    return report


def compression(kept: int, total: int) -> float:
    """total / kept; infinite when nothing is kept."""
    return total / kept if kept else math.inf
