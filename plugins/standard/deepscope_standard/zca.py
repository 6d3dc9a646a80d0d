"""ZCA whitening fitted on a training set, held in the model as ``deepscope.LinearPreprocess``.

Two conventions, as the distillation papers use them:

- ``kornia`` (MTT, KIP-style): the feature-centred covariance with ``eps`` added to every eigenvalue,
  fitted by ``kornia.enhance.zca_mean`` (MTT calls ``kornia.enhance.ZCAWhitening(eps=0.1)``);
- ``relative`` (RaT-BPTT): the same whitening but with ``reg * mean(eigenvalue)`` added, so the
  regularisation scales with the data (the official code's ``regularization = 0.1``).

The official RaT-BPTT preprocessing also centres each image and scales it to unit L2 norm before
whitening. That step is not invertible, and a distilled set held in the model's input space must map
back to pixels exactly (``Network.from_input``), so it is left out here: the whitening is linear.
"""

from __future__ import annotations

import torch

from deepscope import LinearPreprocess


def fit_zca(x: torch.Tensor, method: str = "kornia", reg: float = 0.1) -> LinearPreprocess:
    """The ZCA whitening of ``x`` (N, C, H, W), already normalized as the model normalizes it."""
    flat = x.flatten(1).double()
    if method == "kornia":
        from kornia.enhance import zca_mean

        matrix, mean, _ = zca_mean(flat, dim=0, unbiased=True, eps=float(reg))
        return LinearPreprocess(matrix.float(), mean.flatten().float())
    if method != "relative":
        raise ValueError(f"unknown ZCA method {method!r}: use 'kornia' or 'relative'")
    mean = flat.mean(0)
    centred = flat - mean
    cov = centred.T @ centred / (len(flat) - 1)
    eigenvalues, vectors = torch.linalg.eigh(cov)
    eigenvalues = eigenvalues.clamp(min=0)
    scale = (eigenvalues + reg * eigenvalues.mean()).rsqrt()
    matrix = (vectors * scale) @ vectors.T
    return LinearPreprocess(matrix.float(), mean.float())
