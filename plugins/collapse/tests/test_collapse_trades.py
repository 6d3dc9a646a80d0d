"""TRADES: the inner maximization's constraints, the loss's closed forms, and the BN mode contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepscope_collapse.configs import TradesConfig
from deepscope_collapse.trades import kl_to_clean, trades_loss, trades_perturb
from deepscope_collapse.trainer import TradesTrainer


def net(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 4))


def data(n=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 2, 2, generator=g), torch.randint(0, 4, (n,), generator=g)


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.3)])
def test_inner_maximization_stays_in_ball_and_box_and_increases_kl(norm, eps):
    model = net()
    x, _ = data()
    x_adv = trades_perturb(model, x, eps=eps, step_size=eps / 4, steps=10, norm=norm)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert float(size.max()) <= eps + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    with torch.no_grad():
        p = F.softmax(model(x), 1)
        start = x + 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
        assert float(kl_to_clean(model(x_adv), p)) > 10 * float(kl_to_clean(model(start.clamp(0, 1)), p))


def test_zero_eps_returns_the_input():
    x, _ = data()
    assert torch.equal(trades_perturb(net(), x, eps=0.0, step_size=0.01, steps=3), x)


def test_kl_matches_its_definition():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    p, q = F.softmax(a, 1), F.softmax(b, 1)
    manual = float((p * (p.log() - q.log())).sum())
    assert float(kl_to_clean(b, p)) == pytest.approx(manual, rel=1e-5)
    assert float(kl_to_clean(a, p)) == pytest.approx(0.0, abs=1e-6)


def test_loss_is_cross_entropy_plus_beta_times_mean_kl():
    model = net()
    x, y = data()
    x_adv = trades_perturb(model, x, eps=0.1, step_size=0.03, steps=3)
    with torch.no_grad():
        ce = float(F.cross_entropy(model(x), y))
        kl = float(kl_to_clean(model(x_adv), F.softmax(model(x), 1))) / len(x)
        assert kl > 0
        assert float(trades_loss(model, x, x_adv, y, 0.0)[0]) == pytest.approx(ce, rel=1e-6)
        assert float(trades_loss(model, x, x_adv, y, 6.0)[0]) == pytest.approx(ce + 6 * kl, rel=1e-5)
        assert float(trades_loss(model, x, x, y, 6.0)[0]) == pytest.approx(ce, rel=1e-6)


class ModeRecorder(nn.Module):
    """Records model.training at every forward (stands in for BatchNorm)."""

    def __init__(self):
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        return x


@pytest.mark.parametrize("attack_bn,expected", [
    ("eval", [False] * 3 + [True] * 2),   # clean probs + 2 ascent steps in eval, CE and KL forwards in train
    ("train", [True] * 5),
    ("reference", [False] * 5),
])
def test_batch_norm_mode_during_inner_maximization(attack_bn, expected):
    recorder = ModeRecorder()
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), recorder)
    cfg = TradesConfig(steps=2, attack_bn=attack_bn, eps=0.05, step_size=0.01)
    batch_loss = TradesTrainer(cfg).batch_loss(None, None)
    model.train()
    x, y = data()
    loss, sums = batch_loss(model, x, y)
    assert recorder.modes == expected
    assert loss.requires_grad and sums["loss"] == pytest.approx(float(loss.detach()) * len(x))


def reference_linf(model, x, eps, step_size, steps, noise):
    """The TRADES reference's L-inf inner loop (trades.py), written out: no clamp before the first gradient."""
    with torch.no_grad():
        p = F.softmax(model(x), dim=1)
    x_adv = x + 0.001 * noise
    for _ in range(steps):
        x_adv.requires_grad_()
        kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), p, reduction="sum")
        grad = torch.autograd.grad(kl, [x_adv])[0]
        x_adv = x_adv.detach() + step_size * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
    return x_adv


def reference_l2(model, x, eps, steps, noise):
    """The reference's L2 loop: SGD on delta with lr 2 * eps / steps on the normalized gradient, box, renorm."""
    with torch.no_grad():
        p = F.softmax(model(x), dim=1)
    delta = (0.001 * noise).requires_grad_(True)
    opt = torch.optim.SGD([delta], lr=eps / steps * 2)
    for _ in range(steps):
        opt.zero_grad()
        loss = -F.kl_div(F.log_softmax(model(x + delta), dim=1), p, reduction="sum")
        loss.backward()
        delta.grad.div_(delta.grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1))
        opt.step()
        delta.data.add_(x).clamp_(0, 1).sub_(x)
        delta.data.renorm_(p=2, dim=0, maxnorm=eps)
    return (x + delta).detach()


def zero_heavy_data(n=16, seed=3):
    """Half the pixels exactly 0, as on Fashion-MNIST: where clamping the start matters."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 2, 2, generator=g)
    return torch.where(torch.rand(x.shape, generator=g) < 0.5, torch.zeros_like(x), x)


def test_default_start_equals_the_reference_loop_and_clamping_is_the_option():
    model, x = net(1), zero_heavy_data()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    ours = trades_perturb(model, x, eps=0.1, step_size=0.025, steps=10, generator=torch.Generator().manual_seed(7))
    assert torch.equal(ours, reference_linf(model, x, 0.1, 0.025, 10, noise))
    clamped = trades_perturb(model, x, eps=0.1, step_size=0.025, steps=10, clamp_start=True,
                             generator=torch.Generator().manual_seed(7))
    assert not torch.equal(clamped, ours)  # the first gradient is taken elsewhere
    assert torch.equal(clamped, reference_linf_clamped(model, x, noise))


def reference_linf_clamped(model, x, noise):
    """The clamped start is the reference loop started from clamp(x + 0.001 N, 0, 1)."""
    start = (x + 0.001 * noise).clamp(0, 1)
    return reference_linf(model, x, 0.1, 0.025, 10, (start - x) / 0.001)


def test_l2_default_step_scales_with_eps_and_matches_the_reference():
    model, x = net(2), zero_heavy_data()
    for eps in (0.2, 1.0):
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
        ours = trades_perturb(model, x, eps=eps, steps=10, norm="l2", generator=torch.Generator().manual_seed(5))
        explicit = trades_perturb(model, x, eps=eps, steps=10, step_size=2 * eps / 10, norm="l2",
                                  generator=torch.Generator().manual_seed(5))
        assert torch.equal(ours, explicit)
        assert (ours - x).flatten(1).norm(dim=1).max() <= eps + 1e-6
        # ours projects onto the ball, then the box; the reference the box, then the ball (its result
        # can leave the ball's intersection with the box): same step rule, so the same KL within 5%
        ref = reference_l2(model, x, eps, 10, noise)
        with torch.no_grad():
            p = F.softmax(model(x), 1)
            kl_ours, kl_ref = float(kl_to_clean(model(ours), p)), float(kl_to_clean(model(ref), p))
        assert abs(kl_ours - kl_ref) <= 0.05 * kl_ref, (kl_ours, kl_ref)
