"""VOneBlock pieces against closed forms: Gabor kernels, parameter histograms, cells, neuronal noise."""

from __future__ import annotations

import math

import numpy as np
import torch

from deepscope_scatternet.noise import NeuronalNoise
from deepscope_scatternet.vone import ORI_COUNTS, VOneBlock, gabor_kernel, sample_gabor_params


def test_gabor_kernel_matches_the_formula_pointwise():
    f, sx, sy, theta, phase, k = 0.2, 2.0, 3.0, 0.7, 0.4, 9
    g = gabor_kernel(f, sx, sy, theta, phase, k)
    for i, j in [(4, 4), (0, 8), (2, 5), (7, 1)]:
        x, y = i - 4, j - 4
        rx, ry = x * math.cos(theta) + y * math.sin(theta), -x * math.sin(theta) + y * math.cos(theta)
        expected = math.exp(-0.5 * (rx ** 2 / sx ** 2 + ry ** 2 / sy ** 2)) / (2 * math.pi * sx * sy) \
            * math.cos(2 * math.pi * f * rx + phase)
        assert abs(g[i, j].item() - expected) < 1e-7


def test_rotating_by_90_degrees_transposes_the_kernel():
    a = gabor_kernel(0.15, 2.0, 3.0, 0.0, 0.3, 11)
    b = gabor_kernel(0.15, 2.0, 3.0, math.pi / 2, 0.3, 11)
    assert torch.allclose(b, a.T, atol=1e-6)


def test_orientation_histogram_follows_devalois():
    p = sample_gabor_params(40000, seed=0)
    ori = p["ori"]
    assert ori.min() >= 0 and ori.max() < 180
    # bins centred on 0, 45, 90, 135 degrees (the first wraps around 180)
    shifted = np.where(ori >= 157.5, ori - 180, ori)
    counts = np.histogram(shifted, bins=[-22.5, 22.5, 67.5, 112.5, 157.5])[0] / len(ori)
    assert np.allclose(counts, ORI_COUNTS / ORI_COUNTS.sum(), atol=0.01)


def test_spatial_frequency_range_and_size_correlation():
    p = sample_gabor_params(20000, seed=1, sf_corr=0.75, sf_max=9)
    assert p["sf"].min() >= 0.5 and p["sf"].max() <= 8.0
    assert 0.1 <= p["nx"].min() and p["nx"].max() <= 10 ** 0.2
    corr = np.corrcoef(np.log(p["nx"]), np.log(p["sf"]))[0, 1]
    assert corr > 0.4
    q = sample_gabor_params(20000, seed=1, sf_corr=0.0)
    assert abs(np.corrcoef(np.log(q["nx"]), np.log(q["sf"]))[0, 1]) < 0.05


def test_complex_cells_are_phase_invariant_and_simple_cells_are_not():
    """A grating shifted along the cells' axis: simple responses follow the phase, complex ones do not."""
    f, sigma, theta, phase, k = 0.25, 8.0, 0.6, 0.3, 33  # 2 periods per sigma: no DC leakage
    block = VOneBlock((1, k, k), simple_channels=1, complex_channels=1, ksize=k, stride=1, noise_mode="none")
    for cell in (0, 1):
        block.q0[cell, 0] = gabor_kernel(f, sigma, sigma, theta, phase, k)
        block.q1[cell, 0] = gabor_kernel(f, sigma, sigma, theta, phase + math.pi / 2, k)
    grid = torch.arange(k, dtype=torch.float64) - k // 2
    x, y = torch.meshgrid(grid, grid, indexing="ij")
    rx = x * math.cos(theta) + y * math.sin(theta)
    simple, complex_ = [], []
    for shift in np.linspace(0, 2 * math.pi, 8, endpoint=False):
        grating = torch.cos(2 * math.pi * f * rx + shift).float()
        r = block.responses(grating[None, None])[0, :, k // 2, k // 2]
        simple.append(r[0].item())
        complex_.append(r[1].item())
    simple, complex_ = np.array(simple), np.array(complex_)
    assert complex_.std() / complex_.mean() < 1e-3
    # simple = k_exc * relu(A/2 cos(phase - shift)) with complex = k_exc * A/2 / sqrt(2)
    amplitude = complex_.mean() * math.sqrt(2)
    expected = np.maximum(amplitude * np.cos(phase - np.linspace(0, 2 * math.pi, 8, endpoint=False)), 0)
    assert np.allclose(simple, expected, atol=1e-3 * amplitude)


def test_neuronal_noise_has_poisson_like_variance():
    noise = NeuronalNoise(scale=0.35, level=0.07)
    torch.manual_seed(0)
    a = 30.0
    out = noise(torch.full((200000,), a))
    rate = a * 0.35 + 0.07
    # out = a + z * sqrt(rate) / scale; ReLU clips below 0, i.e. z < -3.2 (0.07 % of draws)
    assert abs(out.mean().item() - a) < 0.1
    assert abs(out.var().item() / (rate / 0.35 ** 2) - 1) < 0.02


def test_block_output_shape_for_32x32_stride_4():
    block = VOneBlock((3, 32, 32), simple_channels=5, complex_channels=3, ksize=15, stride=4, noise_mode="none")
    out = block(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 8, 8, 8) == (2, *block.out_shape)
    assert (out[:, :5] >= 0).all()


def _channel_of(bank: torch.Tensor) -> torch.Tensor:
    """The one colour channel each filter reads (the others are zero)."""
    return bank.flatten(2).abs().sum(2).argmax(1)


def test_phases_draw_their_colour_channels_independently_unless_shared():
    independent = VOneBlock((3, 32, 32), simple_channels=20, complex_channels=20, noise_mode="none")
    shared = VOneBlock((3, 32, 32), simple_channels=20, complex_channels=20, noise_mode="none",
                       shared_phase_channel=True)
    assert torch.equal(_channel_of(shared.q0), _channel_of(shared.q1))
    differ = (_channel_of(independent.q0) != _channel_of(independent.q1)).float().mean().item()
    assert 0.4 < differ < 0.9  # two independent uniform draws over 3 channels differ 2/3 of the time
    assert torch.equal(independent.q0, shared.q0)  # the first phase is unchanged


def test_reference_input_norm_feeds_the_block_half_centred_images():
    from deepscope_scatternet.configs import VOneNetConfig
    from deepscope_scatternet.vone import VOneFrontEnd, reference_input_map

    assert VOneNetConfig().input_norm == "reference" and VOneNetConfig().phase_channels == "independent"
    x01 = torch.rand(4, 1, 16, 16)
    normalized = (x01 - 0.286) / 0.353  # what the network's Normalize layer hands the model body
    seen = {}
    block = VOneBlock((1, 16, 16), simple_channels=4, complex_channels=4, ksize=7, noise_mode="none")
    block.register_forward_pre_hook(lambda mod, args: seen.__setitem__("input", args[0].detach()))
    for front, expected in ((VOneFrontEnd(block, 8, *reference_input_map((0.286,), (0.353,))), (x01 - 0.5) / 0.5),
                            (VOneFrontEnd(block, 8), normalized)):
        with torch.no_grad():
            front(normalized)
        assert torch.allclose(seen["input"], expected, atol=1e-5)
