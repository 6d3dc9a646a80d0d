"""deepscope-scatternet: wavelet scattering + noise vs VOneBlock front-ends under adaptive attacks.

Reproduces the setting of "Wavelets Beat Monkeys at Adversarial Robustness"
(Su & Kempe, arXiv:2304.09403). Importing this module is cheap: only the attrs
configs load here; every factory is a "module:attr" string.
"""

from __future__ import annotations

from deepscope import hookimpl

from . import configs


@hookimpl
def deepscope_register_models(register):
    register("scatternet", "deepscope_scatternet.scattering:build_scatternet", configs.ScatterNetConfig,
             doc="Wavelet scattering (kymatio) + Gaussian noise + a registered back-end")
    register("vonenet", "deepscope_scatternet.vone:build_vonenet", configs.VOneNetConfig,
             doc="VOneBlock (Gabor bank, simple/complex cells, V1 noise) + 1x1 bottleneck + back-end")
    register("frontend-cnn", "deepscope_scatternet.backend:build_frontend_cnn", configs.FrontendCNNConfig,
             doc="Small conv back-end for front-end maps; on raw images, a plain-CNN baseline")


@hookimpl
def deepscope_register_probes(register):
    register("gradient-check", "deepscope_scatternet.gradient_check:GradientCheck", configs.GradientCheckConfig,
             doc="Gradient-masking check: PGD vs Square and vs a large eps; logs masking_suspected")
