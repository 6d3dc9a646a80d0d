"""Stochastic layers for noisy front-ends, with a switch that freezes one draw.

The noise stays on in eval mode: it is part of the defence, so attacks and
evaluations see it exactly as at training time. Freezing re-seeds a private
generator at every forward, so the draw depends only on the tensor's shape and
the seed: the model becomes a deterministic function (tests, gradient checks).
"""

from __future__ import annotations

import torch
from torch import nn


class NoiseSource(nn.Module):
    """Draws standard normal noise: fresh every call, or the same frozen draw."""

    def __init__(self, frozen: bool = False, seed: int = 0):
        super().__init__()
        self.frozen = frozen
        self.seed = seed

    def freeze(self, seed: int | None = None) -> None:
        self.frozen = True
        if seed is not None:
            self.seed = seed

    def unfreeze(self) -> None:
        self.frozen = False

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        if not self.frozen:
            return torch.randn_like(x)
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        return torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)

    def extra_repr(self) -> str:
        return f"frozen={self.frozen}, seed={self.seed}"


class GaussianNoise(NoiseSource):
    """x + std * N(0, 1), i.i.d. over every coefficient (the scattering front-end's noise)."""

    def __init__(self, std: float, frozen: bool = False, seed: int = 0):
        super().__init__(frozen, seed)
        self.std = float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.std == 0:
            return x
        return x + self.std * self.randn_like(x)

    def extra_repr(self) -> str:
        return f"std={self.std}, {super().extra_repr()}"


class NeuronalNoise(NoiseSource):
    """VOneBlock's Poisson-like noise: variance equal to the (scaled, offset) mean response."""

    def __init__(self, scale: float, level: float, frozen: bool = False, seed: int = 0):
        super().__init__(frozen, seed)
        self.scale = float(scale)
        self.level = float(level)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 0:
            return torch.relu(x)
        rate = x * self.scale + self.level
        rate = rate + self.randn_like(rate) * torch.sqrt(torch.relu(rate) + 1e-4)
        return torch.relu((rate - self.level) / self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, level={self.level}, {super().extra_repr()}"


class ReluGaussianNoise(GaussianNoise):
    """VOneBlock's `gaussian` mode: fixed-std noise on the responses, then ReLU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(x))


def noise_sources(model: nn.Module) -> list[NoiseSource]:
    """Every noise layer inside a model (to freeze or unfreeze them all)."""
    return [m for m in model.modules() if isinstance(m, NoiseSource)]


def set_noise_frozen(model: nn.Module, frozen: bool, seed: int | None = None) -> int:
    """Freeze (fixed draw) or unfreeze every noise layer; returns how many were switched."""
    sources = noise_sources(model)
    for i, src in enumerate(sources):
        if frozen:
            src.freeze(None if seed is None else seed + i)
        else:
            src.unfreeze()
    return len(sources)

