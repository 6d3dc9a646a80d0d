"""NC metrics against closed forms, brute force and the reference's dense formula."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from deepscope_collapse.metrics import (MeanAccumulator, ScatterAccumulator, cdnv, class_variances, coherence,
                                        collapse_metrics, equinorm, etf_error, self_duality, simplex_alignment)


def simplex_etf(c: int, d: int, seed: int = 0) -> torch.Tensor:
    """(C, d) simplex ETF: sqrt(C/(C-1)) * U (I - 11^T/C) with U (d x C) orthonormal columns."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(d, c, generator=g, dtype=torch.float64))
    centred = torch.eye(c, dtype=torch.float64) - 1.0 / c
    return math.sqrt(c / (c - 1)) * (u @ centred).T


def streaming(h, y, c, logits=None, weight=None, batch=None, divide=True):
    batch = batch or len(h)
    means = MeanAccumulator(c)
    for s in range(0, len(h), batch):
        means.update(h[s:s + batch], y[s:s + batch])
    scat = ScatterAccumulator(means)
    for s in range(0, len(h), batch):
        scat.update(h[s:s + batch], y[s:s + batch], None if logits is None else logits[s:s + batch])
    return collapse_metrics(means, scat, weight, divide), means, scat


def dense_nc1(h: np.ndarray, y: np.ndarray, c: int) -> float:
    """The reference's formula with everything in memory: trace(Sw @ pinv(Sb)), no /C."""
    n, d = h.shape
    mu = np.stack([h[y == k].mean(0) for k in range(c)])
    mu_g = h.mean(0)
    sw = np.zeros((d, d))
    for i in range(n):
        r = (h[i] - mu[y[i]])[:, None]
        sw += r @ r.T
    sw /= n
    m = (mu - mu_g).T
    sb = m @ m.T / c
    return float(np.trace(sw @ scipy.linalg.pinv(sb)))


def random_problem(n=120, d=9, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    centres = 2.0 * torch.randn(c, d, generator=g, dtype=torch.float64)
    h = centres[y] + torch.randn(n, d, generator=g, dtype=torch.float64)
    return h, y


def test_perfect_collapse_gives_zero_everywhere():
    c, d = 5, 12
    etf = simplex_etf(c, d)
    y = torch.arange(c).repeat(7)
    h = 3.0 * etf[y]  # no within-class spread
    weight = etf.clone()  # W = M^T (up to scale)
    logits = h @ weight.T
    nc, _, _ = streaming(h, y, c, logits=logits, weight=weight)
    for key in ("nc1", "nc2_equinorm", "nc2_equiangular", "nc2_equinorm_w", "nc2_equiangular_w", "nc3", "nc4"):
        assert nc[key] == pytest.approx(0.0, abs=1e-10), key
    assert nc["ncc_label_acc"] == 1.0


def test_nc1_invariant_to_scaling_and_rotation_and_off_by_exactly_c_without_division():
    c = 4
    h, y = random_problem(c=c)
    base = streaming(h, y, c)[0]["nc1"]
    q, _ = torch.linalg.qr(torch.randn(h.shape[1], h.shape[1], generator=torch.Generator().manual_seed(3),
                                       dtype=torch.float64))
    assert streaming(7.5 * h, y, c)[0]["nc1"] == pytest.approx(base, rel=1e-10)
    assert streaming(h @ q, y, c)[0]["nc1"] == pytest.approx(base, rel=1e-10)
    assert streaming(h, y, c, divide=False)[0]["nc1"] == pytest.approx(c * base, rel=1e-12)


@pytest.mark.parametrize("batch", [1, 7, 50, None])
def test_streaming_equals_dense_reference_formula(batch):
    c = 4
    h, y = random_problem(c=c, seed=1)
    nc, _, _ = streaming(h, y, c, batch=batch, divide=False)
    assert nc["nc1"] == pytest.approx(dense_nc1(h.numpy(), y.numpy(), c), rel=1e-9)
    # float32 features in small batches give the same (accumulation is float64)
    nc32, _, _ = streaming(h.float(), y, c, batch=batch, divide=False)
    assert nc32["nc1"] == pytest.approx(nc["nc1"], rel=1e-5)


def test_streaming_equals_dense_when_d_exceeds_n_and_classes_are_imbalanced():
    c, d = 3, 40
    g = torch.Generator().manual_seed(5)
    y = torch.tensor([0] * 5 + [1] * 9 + [2] * 14)
    h = torch.randn(len(y), d, generator=g, dtype=torch.float64) + 3 * torch.randn(c, d, generator=g,
                                                                                 dtype=torch.float64)[y]
    nc, _, _ = streaming(h, y, c, batch=4, divide=False)
    assert nc["nc1"] == pytest.approx(dense_nc1(h.numpy(), y.numpy(), c), rel=1e-9)


def test_global_mean_of_balanced_data_is_mean_of_class_means():
    h, y = random_problem(n=80, c=4, seed=2)
    means = MeanAccumulator(4)
    means.update(h, y)
    assert torch.allclose(means.global_mean(), means.means().mean(0), atol=1e-12)
    assert torch.allclose(means.global_mean(), h.mean(0), atol=1e-12)


def test_equinorm_and_coherence_match_brute_force():
    g = torch.Generator().manual_seed(4)
    v = torch.randn(5, 6, generator=g, dtype=torch.float64)
    norms = [float(v[i].norm()) for i in range(5)]
    assert equinorm(v) == pytest.approx(float(np.std(norms, ddof=1) / np.mean(norms)), rel=1e-12)
    total = 0.0
    for i, j in itertools.permutations(range(5), 2):
        cos = float(v[i] @ v[j] / (v[i].norm() * v[j].norm()))
        total += abs(cos + 1.0 / 4)
    assert coherence(v) == pytest.approx(total / 20, rel=1e-12)


def test_nc3_is_invariant_to_scaling_w_or_m_and_positive_otherwise():
    g = torch.Generator().manual_seed(6)
    w, m = (torch.randn(4, 7, generator=g, dtype=torch.float64) for _ in range(2))
    base = self_duality(w, m)
    assert base > 0.1
    assert self_duality(3.0 * w, m) == pytest.approx(base, rel=1e-10)
    assert self_duality(w, 0.2 * m) == pytest.approx(base, rel=1e-10)
    assert self_duality(w, w) == pytest.approx(0.0, abs=1e-12)


def test_random_features_with_independent_labels_and_logits():
    c, n, d = 5, 20000, 16
    g = torch.Generator().manual_seed(7)
    h = torch.randn(n, d, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    logits = torch.randn(n, c, generator=g)
    nc, _, _ = streaming(h, y, c, logits=logits, batch=4096)
    assert nc["nc4"] == pytest.approx(1 - 1 / c, abs=0.015)
    assert nc["nc2_equiangular"] > 0.05
    assert nc["ncc_label_acc"] == pytest.approx(1 / c, abs=0.03)


def test_absent_classes_are_left_out():
    c = 5
    h, y = random_problem(n=60, c=3, seed=8)  # labels 0..2 only, C = 5
    nc5, _, _ = streaming(h, y, c, divide=False)
    nc3, _, _ = streaming(h, y, 3, divide=False)
    assert nc5["nc1"] == pytest.approx(nc3["nc1"], rel=1e-12)
    assert nc5["nc2_equiangular"] == pytest.approx(nc3["nc2_equiangular"], rel=1e-12)


def test_alignment_of_shifted_copy():
    c = 4
    h, y = random_problem(c=c, seed=9)
    shift = torch.randn(h.shape[1], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a, b = MeanAccumulator(c), MeanAccumulator(c)
    a.update(h, y)
    b.update(h + shift, y)
    al = simplex_alignment(a, b)
    assert torch.allclose(al["dist"], torch.full((c,), float(shift.norm()), dtype=torch.float64))
    assert torch.allclose(al["dist_centred"], torch.zeros(c, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(al["angle_centred"], torch.zeros(c, dtype=torch.float64), atol=1e-4)
    assert float(al["global_shift"]) == pytest.approx(float(shift.norm()), rel=1e-12)
    same = simplex_alignment(a, a)
    assert float(same["dist"].max()) == 0.0 and float(same["global_shift"]) == 0.0
    # a perturbation that swaps two class means moves exactly those two
    y_swapped = y.clone()
    y_swapped[y == 0], y_swapped[y == 1] = 1, 0
    s = MeanAccumulator(c)
    s.update(h, y_swapped)
    sw = simplex_alignment(a, s)
    expected = float((a.means()[0] - a.means()[1]).norm())
    assert sw["dist"][:2].tolist() == pytest.approx([expected, expected], rel=1e-12)
    assert sw["dist"][2:].abs().max() == 0.0


def test_etf_error_is_zero_on_an_exact_simplex_at_any_scale_and_rotation():
    for c in (2, 3, 5, 10):
        etf = simplex_etf(c, d=12, seed=c)
        assert etf_error(etf) < 1e-12
        assert etf_error(7.5 * etf) < 1e-12


def test_etf_error_of_orthonormal_means_has_its_closed_form():
    # Gram I: ||I / sqrt(C) - (I - 11^T/C) / sqrt(C - 1)||_F^2 = 2 - 2 sqrt((C - 1) / C)
    for c in (3, 4, 8):
        expected = math.sqrt(2 - 2 * math.sqrt((c - 1) / c))
        assert etf_error(3.0 * torch.eye(c, 11, dtype=torch.float64)) == pytest.approx(expected, rel=1e-12)


def test_cdnv_of_a_hand_built_configuration():
    # class 0 at (+-1, 0): mean (0, 0), variance 1; class 1 at (10 +- 2, 0): mean (10, 0), variance 4;
    # class 2 at (0, 5 +- 3): mean (0, 5), variance 9. Pairs: 5/200, 10/50, 13/250.
    h = torch.tensor([[-1, 0], [1, 0], [8, 0], [12, 0], [0, 2], [0, 8]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    metrics, means, scat = streaming(h, y, 3, batch=4)
    expected = (5 / 200 + 10 / 50 + 13 / 250) / 3
    assert metrics["cdnv"] == pytest.approx(expected, rel=1e-12)
    assert cdnv(means.means(), class_variances(means, scat)) == pytest.approx(expected, rel=1e-12)


def test_cdnv_matches_brute_force_over_pairs_and_vanishes_under_collapse():
    c = 4
    h, y = random_problem(n=90, d=6, c=c, seed=3)
    metrics, _, _ = streaming(h, y, c, batch=17)
    mu = [h[y == k].mean(0) for k in range(c)]
    var = [(h[y == k] - mu[k]).pow(2).sum(1).mean() for k in range(c)]
    pairs = [float((var[a] + var[b]) / (2 * (mu[a] - mu[b]).pow(2).sum()))
             for a, b in itertools.combinations(range(c), 2)]
    assert metrics["cdnv"] == pytest.approx(sum(pairs) / len(pairs), rel=1e-10)
    etf = simplex_etf(c, d=6)
    balanced = torch.arange(88) % c  # balanced: the sample-weighted global mean is the simplex centre
    collapsed, _, _ = streaming(etf[balanced], balanced, c)
    assert collapsed["cdnv"] < 1e-25 and collapsed["etf_error"] < 1e-12  # rounding of the means only
