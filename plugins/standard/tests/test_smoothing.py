"""Randomized smoothing: Clopper-Pearson against scipy, certificates against a linear model's closed form."""

from __future__ import annotations

import pytest
import torch
from scipy import stats
from torch import nn

from deepscope import hookimpl
from deepscope.testing import make_host, run_toml, tiny_data
from deepscope_standard.smoothing import certify, clopper_pearson_lower


@pytest.mark.parametrize("n", [10, 100, 1000])
def test_clopper_pearson_lower_bound_equals_the_beta_quantile(n):
    k = torch.tensor([1, n // 3, n // 2, n - 1, n])
    ours = clopper_pearson_lower(k, n, 0.001)
    expected = torch.tensor([stats.beta.ppf(0.001, int(ki), n - int(ki) + 1) for ki in k], dtype=torch.float64)
    assert torch.allclose(ours, expected, atol=1e-9, rtol=0)
    assert clopper_pearson_lower(torch.tensor([0]), n, 0.001).item() == 0.0


def test_certified_radius_is_sound_and_tight_on_a_linear_classifier():
    """Smoothing the half-space w.x + b > 0 gives p_A = Phi(d / sigma): the radius is the distance d."""
    torch.manual_seed(0)
    d = 20
    linear = nn.Linear(d, 2)
    with torch.no_grad():
        linear.weight[1].zero_()
        linear.bias[1] = 0.0
    x = torch.randn(30, d) * 0.3
    with torch.no_grad():
        margin = x @ linear.weight[0] + linear.bias[0]
    distance = margin.abs() / linear.weight[0].norm()
    label = (margin < 0).long()  # class 0 where w.x + b > 0
    sigma = 0.25
    pred, radius = certify(linear, x, sigma, n0=100, n=4000, alpha=1e-4, batch=4000, num_classes=2,
                           gen=torch.Generator().manual_seed(1))
    certified = pred >= 0
    assert certified.float().mean() > 0.7
    assert torch.equal(pred[certified], label[certified])  # the smoothed class is the half-space's
    assert (radius[certified] <= distance[certified] + 1e-6).all()  # sound
    # tight up to the confidence bound: p_lower is about p - z * sqrt(p (1 - p) / n) with z = 3.7 at
    # alpha 1e-4, so the radius loses sigma * z * 0.5 / sqrt(n) / phi(0) < 0.04, plus sampling noise
    # of the same size; beyond Phi^-1 of what n samples can show (d > 3.5 sigma) it is capped
    near = certified & (distance < 3.5 * sigma)
    assert near.sum() > 20
    assert (radius[near] >= distance[near] - 0.08).all()


class TinyPlugin:
    @hookimpl
    def deepscope_register_datasets(self, register):
        register("tiny", lambda config: tiny_data(n_train=256, n_test=20, shape=(1, 6, 6), classes=3, seed=1), None)


def test_smoothing_probe_in_a_pipeline():
    import deepscope_standard

    result = run_toml("""
        [run]
        name = "t"
        seed = 0
        [data]
        use = "tiny"
        [model]
        use = "mlp"
        [[stage]]
        do = "train"
        use = "standard"
        optimizer = "adam"
        lr = 0.01
        epochs = 5
        [[stage]]
        do = "probe"
        use = "smoothing"
        sigma = 0.25
        n0 = 20
        n = 200
        radii = [0.0, 0.1, 0.3, 1.0]
        """, make_host(TinyPlugin(), deepscope_standard), track=False)
    m = {k.rsplit("/", 1)[-1]: v for k, v in result.metrics.items() if "smoothing" in k}
    curve = [m[f"certified_acc_{r:g}"] for r in (0.0, 0.1, 0.3, 1.0)]
    assert all(b <= a for a, b in zip(curve, curve[1:])) and curve[0] <= m["smoothed_acc"]
    assert curve[-1] == 0.0  # beyond sigma * Phi^-1(p_lower(200 of 200)) = 0.25 * 2.5 no radius is certifiable
    assert 0 < m["max_certifiable_radius"] < 1.0 and curve[0] > 0.5
