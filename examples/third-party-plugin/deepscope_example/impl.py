"""The example plugin's torch code (imported only when a pipeline uses it)."""

from __future__ import annotations

import torch


class LayerwiseMagnitude:
    def __init__(self, config):
        self.config = config

    def prune(self, state, ctx, density):
        params = state.prunable()
        last = list(params)[-1]
        masks = {}
        for name, weight in params.items():
            if name == last and self.config.keep_last_layer:
                masks[name] = torch.ones_like(weight, dtype=torch.bool)
                continue
            keep = max(1, round(density * weight.numel()))
            threshold = weight.detach().abs().flatten().kthvalue(weight.numel() - keep + 1).values
            masks[name] = weight.detach().abs() >= threshold
        return masks


class ZeroFraction:
    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx):
        metrics = {}
        zeros = total = 0
        for name, weight in state.prunable().items():
            z = int((weight == 0).sum())
            zeros += z
            total += weight.numel()
            if self.config.per_layer:
                metrics[f"layer/{name}"] = z / weight.numel()
        metrics["overall"] = zeros / total
        return metrics
