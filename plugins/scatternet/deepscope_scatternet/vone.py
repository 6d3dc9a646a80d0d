"""The `vonenet` model: a VOneBlock (Dapello et al. 2020) sized for small images, then a back-end.

The Gabor parameters follow the reference's empirical V1 distributions
(orientation: DeValois 1982a; spatial frequency: DeValois 1982b; envelope size
nx, ny: Ringach 2002; sf-size correlation: Schiller 1976). Each filter reads one
randomly chosen colour channel; the filters are fixed buffers (never trained,
never pruned). Simple cells are rectified responses of one phase, complex cells
the energy of a quadrature pair; the noise layer follows (noise.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .backend import build_backend
from .noise import NeuronalNoise, ReluGaussianNoise
from .scattering import FrontEndModel

# Empirical V1 histograms (bin edges, counts), as tabulated by the VOneNet reference.
ORI_BINS = np.array([-22.5, 22.5, 67.5, 112.5, 157.5])
ORI_COUNTS = np.array([66.0, 49.0, 77.0, 54.0])
SF_BINS = np.array([0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6, 8.0])
SF_COUNTS = np.array([4.0, 4.0, 8.0, 25.0, 32.0, 26.0, 28.0, 12.0])
N_BINS = np.logspace(-1, 0.2, 6, base=10)  # nx and ny share these edges
N_JOINT = np.array([[2.0, 0.0, 1.0, 0.0, 0.0],
                    [8.0, 9.0, 4.0, 1.0, 0.0],
                    [1.0, 2.0, 19.0, 17.0, 3.0],
                    [0.0, 0.0, 1.0, 7.0, 4.0],
                    [0.0, 0.0, 0.0, 0.0, 0.0]])


def _inverse_cdf(u: np.ndarray, counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Map uniforms u in [0, 1] through a histogram's piecewise-linear inverse CDF."""
    cdf = np.concatenate(([0.0], np.cumsum(counts) / counts.sum()))
    return np.interp(u, cdf, edges)


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return torch.special.ndtr(torch.from_numpy(np.asarray(z, dtype=np.float64))).numpy()


def _sf_histogram(sf_min: float, sf_max: float, uniform: bool) -> tuple[np.ndarray, np.ndarray]:
    """The spatial-frequency bins inside [sf_min, sf_max] and their counts."""
    keep_hi = np.where(SF_BINS <= sf_max)[0][-1] if not uniform else np.where(SF_BINS < sf_max)[0][-1]
    keep_lo = np.where(SF_BINS >= sf_min)[0][0]
    edges = SF_BINS[keep_lo:keep_hi + 1]
    counts = (np.ones(len(SF_BINS) - 1) if uniform else SF_COUNTS)[keep_lo:keep_hi]
    if len(counts) == 0:
        raise ValueError(f"no spatial-frequency bin lies inside [{sf_min}, {sf_max}] cycles/degree")
    return edges, counts


def sample_gabor_params(n: int, seed: int = 0, uniform: bool = False, sf_corr: float = 0.75,
                        sf_min: float = 0.0, sf_max: float = 9.0) -> dict[str, np.ndarray]:
    """Spatial frequency (cyc/deg), orientation and phase (deg), envelope sizes nx, ny (in periods)."""
    rng = np.random.RandomState(seed)
    phase = rng.uniform(0.0, 360.0, n)
    if uniform:
        ori = rng.uniform(0.0, 180.0, n)
    else:
        ori = _inverse_cdf(rng.rand(n), ORI_COUNTS, ORI_BINS)
        ori[ori < 0] += 180.0
    sf_edges, sf_counts = _sf_histogram(sf_min, sf_max, uniform)
    if uniform:
        sf = 2.0 ** _inverse_cdf(rng.rand(n), sf_counts, np.log2(sf_edges))
        lo, hi = math.log10(0.1), 0.2
        nx = 10.0 ** rng.uniform(lo, hi, n)
        ny = 10.0 ** rng.uniform(lo, hi, n)
        return {"sf": sf, "ori": ori, "phase": phase, "nx": nx, "ny": ny}
    # nx and sf are correlated through a bivariate normal copula; ny is drawn given nx's bin.
    z = rng.multivariate_normal([0.0, 0.0], [[1.0, sf_corr], [sf_corr, 1.0]], n)
    u = _normal_cdf(z)
    log_edges = np.log10(N_BINS)
    nx = 10.0 ** _inverse_cdf(u[:, 0], N_JOINT.sum(axis=1), log_edges)
    rows = np.clip(np.searchsorted(N_BINS, nx, side="left") - 1, 0, len(N_JOINT) - 1)
    ny_u = rng.rand(n)
    ny = np.empty(n)
    for row in np.unique(rows):
        counts = N_JOINT[row] if N_JOINT[row].sum() > 0 else N_JOINT.sum(axis=0)
        ny[rows == row] = 10.0 ** _inverse_cdf(ny_u[rows == row], counts, log_edges)
    sf = 2.0 ** _inverse_cdf(u[:, 1], sf_counts, np.log2(sf_edges))
    return {"sf": sf, "ori": ori, "phase": phase, "nx": nx, "ny": ny}


def gabor_kernel(frequency: float, sigma_x: float, sigma_y: float, theta: float, phase: float,
                 ksize: int) -> torch.Tensor:
    """A ksize x ksize Gabor: Gaussian envelope / (2 pi sx sy) times a cosine along rotated x."""
    half = ksize // 2
    grid = torch.arange(-half, half + 1, dtype=torch.float64)
    x, y = torch.meshgrid(grid, grid, indexing="ij")
    rx = x * math.cos(theta) + y * math.sin(theta)
    ry = -x * math.sin(theta) + y * math.cos(theta)
    envelope = torch.exp(-0.5 * (rx ** 2 / sigma_x ** 2 + ry ** 2 / sigma_y ** 2)) / (2 * math.pi * sigma_x * sigma_y)
    return (envelope * torch.cos(2 * math.pi * frequency * rx + phase)).float()


def gabor_bank(params: dict[str, np.ndarray], in_channels: int, ksize: int, pixels_per_degree: float,
               phase_shift: float, channel_of: np.ndarray) -> torch.Tensor:
    """(out, in, k, k) weights: filter i is a Gabor on colour channel_of[i], zero elsewhere."""
    n = len(params["sf"])
    weight = torch.zeros(n, in_channels, ksize, ksize)
    for i in range(n):
        f = params["sf"][i] / pixels_per_degree  # cycles per pixel
        weight[i, int(channel_of[i])] = gabor_kernel(
            f, params["nx"][i] / f, params["ny"][i] / f, math.radians(params["ori"][i]),
            math.radians(params["phase"][i]) + phase_shift, ksize)
    return weight


class VOneBlock(nn.Module):
    """Fixed quadrature Gabor banks -> simple (ReLU) and complex (energy) cells -> gain -> noise."""

    def __init__(self, in_shape: tuple[int, int, int], simple_channels: int = 64, complex_channels: int = 64,
                 ksize: int = 15, stride: int = 4, visual_degrees: float = 2.0, sf_corr: float = 0.75,
                 sf_min: float = 0.0, sf_max: float = 9.0, rand_param: bool = False, gabor_seed: int = 0,
                 k_exc: float = 25.0, noise_mode: str = "neuronal", noise_scale: float = 0.35,
                 noise_level: float = 0.07, frozen: bool = False, seed: int = 0, shared_phase_channel: bool = False):
        super().__init__()
        c, h, w = in_shape
        n = simple_channels + complex_channels
        self.simple_channels = simple_channels
        self.stride = stride
        self.k_exc = k_exc
        params = sample_gabor_params(n, gabor_seed, rand_param, sf_corr, sf_min, sf_max)
        channel_of = np.random.RandomState(gabor_seed + 1).randint(0, c, n)
        # the reference draws each phase's colour channel separately; sharing one is the option
        channel_of_q1 = channel_of if shared_phase_channel else np.random.RandomState(gabor_seed + 2).randint(0, c, n)
        ppd = max(h, w) / visual_degrees
        self.register_buffer("q0", gabor_bank(params, c, ksize, ppd, 0.0, channel_of))
        self.register_buffer("q1", gabor_bank(params, c, ksize, ppd, math.pi / 2, channel_of_q1))
        if noise_mode == "neuronal":
            self.noise = NeuronalNoise(noise_scale, noise_level, frozen=frozen, seed=seed)
        elif noise_mode == "gaussian":
            self.noise = ReluGaussianNoise(noise_scale, frozen=frozen, seed=seed)
        else:
            self.noise = nn.Identity()
        out_h = (h + 2 * (ksize // 2) - ksize) // stride + 1
        out_w = (w + 2 * (ksize // 2) - ksize) // stride + 1
        self.out_shape = (n, out_h, out_w)

    def responses(self, x: torch.Tensor) -> torch.Tensor:
        """Noiseless cell responses (simple then complex channels), times the gain k_exc."""
        pad = self.q0.shape[-1] // 2
        r0 = F.conv2d(x, self.q0, stride=self.stride, padding=pad)
        r1 = F.conv2d(x, self.q1, stride=self.stride, padding=pad)
        s = self.simple_channels
        simple = torch.relu(r0[:, :s])
        complex_ = torch.sqrt(r0[:, s:] ** 2 + r1[:, s:] ** 2 + 1e-12) / math.sqrt(2.0)
        return self.k_exc * torch.cat([simple, complex_], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.noise(self.responses(x))


class VOneFrontEnd(nn.Module):
    """VOneBlock followed by the 1x1 bottleneck conv that feeds the back-end.

    ``input_scale``/``input_shift`` (per channel) re-map the network's dataset-normalized input
    before the block: the reference feeds it (x - 0.5) / 0.5 of the [0, 1] image, which sets the
    noise's effective level; identity keeps the dataset normalization.
    """

    def __init__(self, block: VOneBlock, bottleneck: int, input_scale: torch.Tensor | None = None,
                 input_shift: torch.Tensor | None = None):
        super().__init__()
        c = block.q0.shape[1]
        self.register_buffer("input_scale", (torch.ones(c) if input_scale is None else input_scale).view(1, c, 1, 1))
        self.register_buffer("input_shift", (torch.zeros(c) if input_shift is None else input_shift).view(1, c, 1, 1))
        self.vone = block
        self.bottleneck = nn.Conv2d(block.out_shape[0], bottleneck, 1, bias=False)
        nn.init.kaiming_normal_(self.bottleneck.weight, mode="fan_out", nonlinearity="relu")
        self.out_shape = (bottleneck, *block.out_shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(self.vone(x * self.input_scale + self.input_shift))


def reference_input_map(mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) taking (x01 - mean) / std to the reference's (x01 - 0.5) / 0.5."""
    mean, std = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
    return std / 0.5, (mean - 0.5) / 0.5


def build_vonenet(config, info) -> FrontEndModel:
    mode = config.noise_mode if config.noise else "none"
    block = VOneBlock(tuple(info.input_shape), config.simple_channels, config.complex_channels, config.ksize,
                      config.stride, config.visual_degrees, config.sf_corr, config.sf_min, config.sf_max,
                      config.rand_param, config.gabor_seed, config.k_exc, mode, config.noise_scale,
                      config.noise_level, frozen=config.freeze_noise, seed=config.noise_seed,
                      shared_phase_channel=config.phase_channels == "shared")
    scale = shift = None
    if config.input_norm == "reference":
        c = info.input_shape[0]
        mean, std = tuple(info.mean), tuple(info.std)
        scale, shift = reference_input_map(mean * (c // len(mean)) if len(mean) < c else mean,
                                           std * (c // len(std)) if len(std) < c else std)
    front = VOneFrontEnd(block, config.bottleneck, scale, shift)
    return FrontEndModel(front, build_backend(config.backend, info, front.out_shape))
