"""The `scatternet` model: kymatio scattering -> Gaussian noise -> normalization -> back-end.

kymatio's ``torch`` backend is differentiable end to end (its stable modulus has
zero gradient at 0), so white-box attacks see true gradients. ``import
kymatio.torch`` fails in this environment, so we import the 2-D torch front-end
module directly.
"""

from __future__ import annotations

import torch
from torch import nn

from .backend import build_backend
from .configs import check_J
from .noise import GaussianNoise


class ScatteringFrontEnd(nn.Module):
    """(B, C, H, W) -> (B, C*K, H/2^J, W/2^J): scattering, then noise, then optional BatchNorm."""

    def __init__(self, in_shape: tuple[int, int, int], J: int = 2, L: int = 8, max_order: int = 2,
                 noise_std: float = 0.0, normalize: str = "batch", frozen: bool = False, seed: int = 0):
        super().__init__()
        from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D

        c, h, w = in_shape
        check_J(J, h, w)
        self.scattering = ScatteringTorch2D(J=J, shape=(h, w), L=L, max_order=max_order, backend="torch")
        with torch.no_grad():
            probe = self.scattering(torch.zeros(1, c, h, w))
        k, oh, ow = probe.shape[-3:]
        self.out_shape = (c * k, oh, ow)
        self.noise = GaussianNoise(noise_std, frozen=frozen, seed=seed)
        self.norm = nn.BatchNorm2d(c * k, affine=False) if normalize == "batch" else nn.Identity()

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """The noiseless scattering coefficients, colours and paths merged into channels."""
        s = self.scattering(x.contiguous())
        return s.flatten(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.noise(self.coefficients(x)))


class FrontEndModel(nn.Module):
    """A front-end followed by a back-end; the back-end's last linear layer is the classifier."""

    def __init__(self, frontend: nn.Module, backend: nn.Module):
        super().__init__()
        self.frontend = frontend
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backend(self.frontend(x))


def build_scatternet(config, info) -> FrontEndModel:
    std = config.noise_std if config.noise else 0.0
    front = ScatteringFrontEnd(tuple(info.input_shape), J=config.J, L=config.L, max_order=config.max_order,
                               noise_std=std, normalize=config.normalize, frozen=config.freeze_noise,
                               seed=config.noise_seed)
    return FrontEndModel(front, build_backend(config.backend, info, front.out_shape))
