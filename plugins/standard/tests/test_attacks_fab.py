"""FAB / FAB-T against its oracles: the exact box-constrained projections (linear programs and a
constrained least-norm solve), the closed-form boundary distance of a linear model, and torchattacks' FAB."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deepscope_standard.fab import fab, project

scipy_optimize = pytest.importorskip("scipy.optimize")


def random_plane(seed: int, dim: int = 6):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(1, dim, generator=g, dtype=torch.float64)
    w = torch.randn(1, dim, generator=g, dtype=torch.float64)
    c = (w * p).sum(1) + torch.randn(1, generator=g, dtype=torch.float64) * 0.5
    return p, w, c


def linf_oracle(p, w, c) -> float:
    """min t s.t. |d_i| <= t, -p_i <= d_i <= 1 - p_i, w.d = c - w.p: a linear program in (d, t)."""
    n = p.shape[1]
    cost = np.r_[np.zeros(n), 1.0]
    eye = np.eye(n)
    a_ub = np.r_[np.c_[eye, -np.ones(n)], np.c_[-eye, -np.ones(n)]]
    bounds = [(-pi, 1 - pi) for pi in p[0].tolist()] + [(0, None)]
    res = scipy_optimize.linprog(cost, A_ub=a_ub, b_ub=np.zeros(2 * n), A_eq=np.r_[w[0].numpy(), 0.0][None],
                                 b_eq=[float(c - (w * p).sum())], bounds=bounds)
    return res.fun if res.status == 0 else float("nan")


def l2_oracle(p, w, c) -> float:
    n = p.shape[1]
    need = float(c - (w * p).sum())
    res = scipy_optimize.minimize(lambda d: d @ d, np.zeros(n), jac=lambda d: 2 * d, method="SLSQP",
                                  bounds=[(-pi, 1 - pi) for pi in p[0].tolist()],
                                  constraints=[{"type": "eq", "fun": lambda d: w[0].numpy() @ d - need}],
                                  options={"ftol": 1e-14, "maxiter": 500})
    return float(np.sqrt(res.fun)) if res.success else float("nan")


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_is_the_nearest_point_of_the_plane_inside_the_box(norm):
    checked = 0
    for seed in range(40):
        p, w, c = random_plane(seed)
        want = linf_oracle(p, w, c) if norm == "linf" else l2_oracle(p, w, c)
        if not np.isfinite(want):  # the box cannot reach the plane
            continue
        d = project(p, w, c, norm)
        assert float((w * (p + d)).sum()) == pytest.approx(float(c), abs=1e-9)
        assert float((p + d).min()) >= -1e-12 and float((p + d).max()) <= 1 + 1e-12
        got = float(d.abs().max() if norm == "linf" else d.norm())
        assert got == pytest.approx(want, rel=1e-6, abs=1e-9), seed
        checked += 1
    assert checked >= 20


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_t_on_a_linear_two_class_model_finds_the_boundary_distance(norm):
    """For z = Wx the nearest point with the other class ahead is |gap| / ||w||_dual away (inside the box
    here); no adversarial point is closer, and FAB's comes within 1% of it."""
    torch.manual_seed(1)
    linear = nn.Linear(20, 2, bias=False).double()
    with torch.no_grad():
        linear.weight.mul_(0.3)
    model = nn.Sequential(nn.Flatten(), linear).eval()
    x = 0.4 + 0.2 * torch.rand(8, 20, dtype=torch.float64)
    y = model(x).argmax(1)
    w = (linear.weight[1] - linear.weight[0]).detach()
    gap = (model(x)[:, 1] - model(x)[:, 0]).detach().abs()
    exact = gap / (w.abs().sum() if norm == "linf" else w.norm())
    adv = fab(model, x, y, eps=10.0, norm=norm, steps=20, target_classes=1)
    found = (adv - x).abs().amax(1) if norm == "linf" else (adv - x).norm(dim=1)
    assert bool((model(adv).argmax(1) != y).all())
    assert bool((found >= exact * (1 - 1e-9)).all()) and bool((found <= exact * 1.01).all())
    # below the distance nothing is broken: the input comes back
    assert torch.equal(fab(model, x, y, eps=float(exact.min()) * 0.99, norm=norm, steps=20, target_classes=1), x)


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
@pytest.mark.parametrize("target_classes", [9, 0], ids=["fab-t", "fab"])
def test_fab_equals_torchattacks_fab_step_for_step(norm, eps, target_classes):
    torchattacks = pytest.importorskip("torchattacks")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(64, 1, 8, 8)
    y = model(x).argmax(1)
    y[::5] = (y[::5] + 1) % 10  # misclassified examples are left alone by both
    ours = fab(model, x, y, eps=eps, norm=norm, steps=30, target_classes=target_classes)
    peer = torchattacks.FAB(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, steps=30, n_restarts=1,
                            multi_targeted=target_classes > 0, n_classes=10)(x, y)
    # the same iterates up to the projections' float32 rounding (ours bisect, the peer sorts)
    assert (ours - peer).abs().max().item() < (1e-5 if norm == "linf" else 1e-4)
    fooled = model(ours).argmax(1) != y
    assert torch.equal(fooled, model(peer).argmax(1) != y) and 0 < int(fooled.sum()) < len(y)
    assert torch.equal(ours[::5], x[::5])


def test_registered_fab_attack_is_the_function_with_its_config():
    from deepscope import ConfigError
    from deepscope.testing import make_host

    import deepscope_standard
    from deepscope_standard.attacks_config import FABConfig
    from deepscope_standard.fab import FAB

    assert "fab" in {c.name for c in make_host(deepscope_standard).registry.components("attack")}
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    x = torch.rand(16, 1, 8, 8)
    y = model(x).argmax(1)
    registered = FAB(FABConfig(eps=0.05, steps=5, target_classes=3))
    assert torch.equal(registered.perturb(model, x, y), fab(model, x, y, eps=0.05, steps=5, target_classes=3))
    with pytest.raises(ConfigError, match="targeted"):
        registered.perturb(model, x, y, target=(y + 1) % 10)
