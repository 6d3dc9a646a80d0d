"""ZCA whitening: against an independent NumPy eigendecomposition, kornia's own ZCAWhitening, and the
round trip that input-space distilled sets need."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepscope import LinearPreprocess
from deepscope_standard.datasets import load_fashion_mnist_sample
from deepscope_standard.datasets_config import SampleConfig
from deepscope_standard.zca import fit_zca


def _data(n=300, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, generator=g, dtype=torch.float64)
    x = (torch.randn(n, d, generator=g, dtype=torch.float64) @ mixing) + 3.0
    return x.view(n, 3, 2, 2)


def _numpy_zca(x, reg, relative):
    flat = x.reshape(len(x), -1).numpy()
    centred = flat - flat.mean(0)
    cov = centred.T @ centred / (len(flat) - 1)
    e, v = np.linalg.eigh(cov)
    e = np.clip(e, 0, None)
    e_reg = e + (reg * e.mean() if relative else reg)
    return v @ np.diag(e_reg ** -0.5) @ v.T, e, e_reg, v


@pytest.mark.parametrize("method", ["kornia", "relative"])
def test_the_matrix_equals_an_independent_eigendecomposition(method):
    x = _data()
    zca = fit_zca(x, method, reg=0.1)
    expected, *_ = _numpy_zca(x, 0.1, relative=method == "relative")
    assert isinstance(zca, LinearPreprocess)
    np.testing.assert_allclose(zca.matrix.double().numpy(), expected, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(zca.shift.numpy(), x.reshape(len(x), -1).mean(0).numpy(), rtol=1e-5)


def test_whitened_covariance_is_the_regularised_identity():
    """cov(Wx) = V diag(e / (e + eps)) V^T: the identity as eps -> 0, shrunk along weak directions."""
    x = _data(n=2000, d=12)
    zca = fit_zca(x, "kornia", reg=0.1)
    z = zca(x.float()).flatten(1).double()
    cov = torch.cov(z.T).numpy()
    _, e, e_reg, v = _numpy_zca(x, 0.1, relative=False)
    np.testing.assert_allclose(cov, v @ np.diag(e / e_reg) @ v.T, atol=2e-4)
    tiny = fit_zca(x, "kornia", reg=1e-9)(x.float()).flatten(1).double()
    np.testing.assert_allclose(torch.cov(tiny.T).numpy(), np.eye(12), atol=2e-3)


def test_kornia_method_equals_kornia_zca_whitening():
    from kornia.enhance import ZCAWhitening

    x = _data().float()
    ours = fit_zca(x, "kornia", reg=0.1)(x)
    theirs = ZCAWhitening(eps=0.1).fit(x)(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_the_preprocessing_inverts_so_input_space_sets_map_back_to_pixels():
    x = _data().float()
    zca = fit_zca(x, "relative", reg=0.1)
    torch.testing.assert_close(zca.inverse(zca(x)), x, rtol=1e-4, atol=1e-4)


def test_a_dataset_with_zca_puts_the_whitening_inside_the_model():
    from deepscope import build_network, structure_component
    from deepscope.testing import make_host
    import deepscope_standard

    bundle = load_fashion_mnist_sample(SampleConfig(zca="kornia", subset=400, test_subset=100))
    assert isinstance(bundle.info.preprocess, LinearPreprocess)
    host = make_host(deepscope_standard)
    spec, issues = structure_component(host.registry, "model", {"use": "mlp"}, "<test>")
    assert not issues
    net = build_network(spec, bundle.info)
    x, _ = bundle.tensors("train")
    z = net.to_input(x)
    # the training split, normalized then whitened, has (regularised) unit variance along its top directions
    top = torch.linalg.eigvalsh(torch.cov(z.flatten(1).double().T))[-5:]
    assert (top > 0.5).all() and (top < 1.0 + 1e-3).all(), top
    torch.testing.assert_close(net.from_input(z), x, rtol=1e-3, atol=1e-3)
    plain = load_fashion_mnist_sample(SampleConfig(subset=400, test_subset=100))
    assert plain.info.preprocess is None
