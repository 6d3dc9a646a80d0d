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
