"""Config classes of the scatternet plugin (attrs only: no torch at import time)."""

from __future__ import annotations

from typing import Literal

import attrs

from deepscope import ConfigError, DataShape, component_param, in_range, non_negative, param, positive

DEFAULT_BACKEND = {"use": "frontend-cnn"}


def scattering_channels(J: int, L: int, max_order: int) -> int:
    """Coefficients per input colour: 1 + J L (order 1) + L^2 J (J - 1) / 2 (order 2)."""
    first = 1 + J * L
    return first if max_order == 1 else first + L * L * J * (J - 1) // 2


def check_J(J: int, height: int, width: int) -> None:
    """kymatio needs 2^J <= min(H, W); say so as a config error on key J."""
    if 2 ** J > min(height, width):
        largest = max(int(min(height, width)).bit_length() - 1, 0)
        raise ConfigError(f"J={J} is too large for {height}x{width} inputs: the scattering needs "
                          f"2^J <= {min(height, width)}, so J <= {largest}", key="J")


@attrs.define(kw_only=True)
class NoiseSwitches:
    """Parameters every noisy front-end shares: on/off, and a frozen draw for deterministic runs."""

    noise: bool = param(True, doc="false: the `noise = false` ablation (front-end is deterministic)")
    freeze_noise: bool = param(False, doc="true: reuse one fixed draw (seeded by noise_seed) at every forward, "
                                          "so the model is deterministic (tests, debugging)")
    noise_seed: int = param(0, doc="seed of the frozen noise draw")


@attrs.define(kw_only=True)
class ScatterNetConfig(NoiseSwitches):
    """Wavelet scattering (kymatio, torch backend) + Gaussian noise + a registered back-end model."""

    J: int = param(2, doc="number of scales; output is H/2^J x W/2^J (needs 2^J <= min(H, W))",
                   validator=positive)
    L: int = param(8, doc="number of orientations (kymatio's filters are tuned for 8)", validator=positive)
    max_order: Literal[1, 2] = param(2, doc="scattering order: 1 + J*L (order 1) or "
                                            "1 + J*L + L^2*J*(J-1)/2 (order 2) channels per colour")
    noise_std: float = param(0.1, doc="std of the i.i.d. Gaussian noise added to every scattering coefficient",
                             validator=non_negative)
    normalize: Literal["batch", "none"] = param("batch", doc="per-channel normalization of the (noisy) "
                                                             "coefficients before the back-end: BatchNorm "
                                                             "without affine, or none")
    backend: object = component_param("model", default=DEFAULT_BACKEND,
                                      doc="back-end model, built from the registry on the front-end's "
                                          "output shape, e.g. { use = \"resnet-18\" }")

    def check(self, shape) -> None:
        """J against the input size, then the back-end against the scattering's output shape."""
        c, h, w = shape.input_shape
        check_J(self.J, h, w)
        backend_check = getattr(getattr(self.backend, "config", None), "check", None)
        if callable(backend_check):
            out = DataShape(shape.name, shape.num_classes,
                            (c * scattering_channels(self.J, self.L, self.max_order), h // 2 ** self.J,
                             w // 2 ** self.J))
            try:
                backend_check(out)
            except ConfigError as exc:
                raise exc.with_prefix("backend") from None


@attrs.define(kw_only=True)
class VOneNetConfig(NoiseSwitches):
    """VOneBlock (Gabor filter bank, simple+complex cells, V1-like noise) + 1x1 bottleneck + back-end."""

    simple_channels: int = param(64, doc="simple cells (ReLU of one quadrature phase)", validator=non_negative)
    complex_channels: int = param(64, doc="complex cells (energy of a quadrature pair)", validator=non_negative)
    ksize: int = param(15, doc="Gabor kernel size in pixels (odd; reference 25 on 224x224)", validator=positive)
    stride: int = param(4, doc="stride of the filter bank (32x32 in -> 8x8 out with 4)", validator=positive)
    visual_degrees: float = param(2.0, doc="field of view of the image in degrees; pixels per degree = "
                                           "image size / this (reference: 8 for 224 px)", validator=positive)
    sf_corr: float = param(0.75, doc="correlation of spatial frequency and envelope size (Schiller 1976)",
                           validator=in_range(-1, 1))
    sf_min: float = param(0.0, doc="lowest spatial frequency bin kept, cycles/degree", validator=non_negative)
    sf_max: float = param(9.0, doc="highest spatial frequency bin kept, cycles/degree", validator=positive)
    rand_param: bool = param(False, doc="uniform parameter distributions instead of the neuronal ones")
    gabor_seed: int = param(0, doc="seed of the Gabor parameter sample and colour-channel choice")
    k_exc: float = param(25.0, doc="gain of the cell responses", validator=positive)
    noise_mode: Literal["neuronal", "gaussian", "none"] = param(
        "neuronal", doc="neuronal: Poisson-like, variance grows with the response; gaussian: fixed std; none")
    noise_scale: float = param(0.35, doc="neuronal: response scale before noise; gaussian: noise std",
                               validator=non_negative)
    noise_level: float = param(0.07, doc="neuronal: response offset before noise", validator=non_negative)
    input_norm: Literal["reference", "dataset"] = param(
        "reference", doc="what the VOneBlock sees: 'reference' = (x - 0.5) / 0.5 of the [0, 1] image, as "
                         "vonenet (sets the noise's effective level); 'dataset' = the dataset-normalized input "
                         "(this plugin's behaviour before)")
    phase_channels: Literal["independent", "shared"] = param(
        "independent", doc="colour channel of each filter's two quadrature phases: 'independent' draws, as "
                           "vonenet; 'shared' one channel for both (before); no difference on grayscale")
    bottleneck: int = param(64, doc="channels of the 1x1 conv between the VOneBlock and the back-end",
                            validator=positive)
    backend: object = component_param("model", default=DEFAULT_BACKEND,
                                      doc="back-end model, built from the registry on the bottleneck's "
                                          "output shape, e.g. { use = \"resnet-18\" }")

    def __attrs_post_init__(self):
        if self.ksize % 2 == 0:
            raise ValueError(f"'ksize' must be odd so the filters have a centre: {self.ksize}")
        if self.simple_channels + self.complex_channels == 0:
            raise ValueError("'simple_channels' and 'complex_channels' cannot both be 0")
        if self.sf_min >= self.sf_max:
            raise ValueError(f"'sf_min' must be < sf_max ({self.sf_max}): {self.sf_min}")


@attrs.define(kw_only=True)
class FrontendCNNConfig:
    """A small conv back-end for front-end feature maps (or, on raw images, a plain CNN baseline)."""

    width: int = param(64, doc="channels of the first block (the second block has 2x)", validator=positive)
    depth: int = param(2, doc="conv layers per block (two blocks)", validator=positive)


@attrs.define(kw_only=True)
class GradientCheckConfig:
    """Gradient-masking check: white-box PGD vs a gradient-free attack and vs a much larger eps."""

    eps: float = param(8 / 255, doc="L-inf radius of the main comparison", validator=non_negative)
    steps: int = param(20, doc="PGD steps", validator=positive)
    eot: int = param(1, doc="noise draws averaged per PGD gradient", validator=positive)
    large_eps: float = param(0.5, doc="radius at which white-box PGD must reach ~0 accuracy",
                             validator=positive)
    large_eps_steps: int = param(50, doc="PGD steps at large_eps", validator=positive)
    queries: int = param(1000, doc="Square attack queries per example (300 at p_init 0.1, the old default, "
                                   "had almost no power)", validator=positive)
    p_init: float = param(0.8, doc="Square's initial fraction of pixels per square (AutoAttack: 0.8)",
                          validator=in_range(0, 1, low_open=True))
    draws: int = param(1, doc="noise draws per accuracy evaluation (mean over draws is reported)",
                       validator=positive)
    n_examples: int = param(200, doc="test examples checked", validator=positive)
    batch_size: int = param(100, doc="examples per batch", validator=positive)
    margin: float = param(0.05, doc="flag when the gradient-free attack beats PGD by more than this",
                          validator=non_negative)
    large_eps_tolerance: float = param(0.1, doc="flag when accuracy at large_eps stays above this",
                                       validator=in_range(0, 1))
    seed: int = param(0, doc="seed of the random search and PGD starts")

    def __attrs_post_init__(self):
        if self.large_eps <= self.eps:
            raise ValueError(f"'large_eps' must be > eps ({self.eps}): {self.large_eps}")
