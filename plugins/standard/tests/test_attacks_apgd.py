"""Oracles for apgd: torchattacks' APGD and APGD-T as peers, a closed form for DLR, and invariants."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchattacks
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from deepscope import hookimpl
from deepscope.testing import make_host, run_toml, tiny_data
from deepscope_standard import attacks_config
from deepscope_standard.autopgd import _single_run, apgd, dlr, objective
from deepscope_standard.attacks import _autocast

SHAPE = (1, 8, 8)
CLASSES = 10


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, CLASSES))


@pytest.fixture(scope="module")
def trained():
    """An MLP fitted to 100% on tiny_data; at eps 0.1 (linf) about a third of the test set falls."""
    data = tiny_data(n_train=512, n_test=200, shape=SHAPE, classes=CLASSES, seed=2)
    model = mlp(0)
    x, y = data.tensors("train")
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    xt, yt = data.tensors("test")
    return model, xt, yt


def correct(model, x, y) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1) == y


@pytest.mark.parametrize("loss", ["ce", "dlr"])
@pytest.mark.parametrize("restarts", [1, 3])
def test_linf_iterates_equal_torchattacks_apgd(trained, loss, restarts):
    model, x, y = trained
    peer = torchattacks.APGD(model, norm="Linf", eps=0.1, steps=20, n_restarts=restarts, seed=3, loss=loss)(x, y)
    ours = apgd(model, x, y, eps=0.1, steps=20, restarts=restarts, loss=loss,
                generator=torch.Generator().manual_seed(3))
    ok_peer, ok_ours = correct(model, peer, y), correct(model, ours, y)
    assert 0.3 < ok_ours.float().mean() < 0.9  # the attack bites, but not everywhere
    assert torch.equal(ok_peer, ok_ours)
    # the peer returns x where it fails; where it fools, it returns the same iterate as ours
    assert torch.equal(peer[~ok_peer], ours[~ok_ours])


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_l2_robust_accuracy_equals_torchattacks_apgd(trained, loss):
    model, x, y = trained
    peer = torchattacks.APGD(model, norm="L2", eps=0.6, steps=20, n_restarts=1, seed=3, loss=loss)(x, y)
    ours = apgd(model, x, y, eps=0.6, norm="l2", steps=20, loss=loss, generator=torch.Generator().manual_seed(3))
    ok_peer, ok_ours = correct(model, peer, y), correct(model, ours, y)
    assert 0.05 < ok_ours.float().mean() < 0.95
    assert torch.equal(ok_peer, ok_ours)
    # l2 steps are continuous: float rounding (norms summed in another order) grows over 20 steps
    both = ~ok_peer & ~ok_ours
    assert (peer[both] - ours[both]).abs().max() < 1e-3


def test_apgd_t_equals_torchattacks_apgdt(trained):
    model, x, y = trained
    peer = torchattacks.APGDT(model, norm="Linf", eps=0.1, steps=20, n_restarts=1, seed=3, n_classes=CLASSES)(x, y)
    ours = apgd(model, x, y, eps=0.1, steps=20, loss="dlr", target_classes=CLASSES - 1,
                generator=torch.Generator().manual_seed(3))
    ok_peer, ok_ours = correct(model, peer, y), correct(model, ours, y)
    assert torch.equal(ok_peer, ok_ours)
    assert torch.equal(peer[~ok_peer], ours[~ok_ours])
    untargeted = apgd(model, x, y, eps=0.1, steps=20, loss="dlr", generator=torch.Generator().manual_seed(3))
    assert ok_ours.sum() <= correct(model, untargeted, y).sum()  # nine targeted runs are at least as strong


@settings(max_examples=30, deadline=None)
@given(norm=st.sampled_from(["linf", "l2"]), eps=st.floats(0.0, 2.0), steps=st.integers(1, 12),
       restarts=st.integers(1, 2), loss=st.sampled_from(["ce", "dlr", "margin"]), seed=st.integers(0, 2**16),
       mode=st.sampled_from(["untargeted", "targeted", "apgd-t"]))
def test_outputs_inside_ball_and_unit_box(norm, eps, steps, restarts, loss, seed, mode):
    g = torch.Generator().manual_seed(seed)
    model = mlp(seed % 7)
    x = torch.rand((6, *SHAPE), generator=g)
    x[0], x[1] = 0.0, 1.0  # inputs on the box's faces
    y = torch.randint(0, CLASSES, (6,), generator=g)
    x_adv = apgd(model, x, y, eps=eps, norm=norm, steps=steps, restarts=restarts, loss=loss, generator=g,
                 target=(y + 1) % CLASSES if mode == "targeted" else None,
                 target_classes=3 if mode == "apgd-t" else 0)
    assert x_adv.shape == x.shape and x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps * (1 + 1e-6) + 1e-6).all(), (size.max().item(), eps)


class Recorder(nn.Module):
    """Records every input it is queried on."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.inner(x)


@pytest.mark.parametrize("norm,eps,loss", [("linf", 0.1, "ce"), ("linf", 0.1, "dlr"), ("l2", 0.6, "ce")])
def test_best_iterate_is_the_highest_loss_point_queried(trained, norm, eps, loss):
    model, x, y = trained
    rec = Recorder(model)
    x_best, loss_best, fooled, x_fooled = _single_run(
        rec, x, y, None, eps=eps, norm=norm, steps=25, loss=loss, eot=1, rho=0.75, amp=_autocast("off", x.device),
        generator=torch.Generator().manual_seed(1), on_target=False)
    with torch.no_grad():
        queried = torch.stack([objective(model(q), y, None, loss) for q in rec.seen])  # (queries, n)
        assert len(rec.seen) == 26  # the start and one query per step
        assert torch.allclose(loss_best, queried.amax(0), atol=1e-6, rtol=0)
        assert torch.allclose(objective(model(x_best), y, None, loss), loss_best, atol=1e-5, rtol=0)
        assert (model(x_fooled[fooled]).argmax(1) != y[fooled]).all()
        ever_wrong = torch.stack([model(q).argmax(1) != y for q in rec.seen]).any(0)
    assert torch.equal(fooled, ever_wrong)


def test_step_size_halves_and_the_loss_improves_on_the_start(trained):
    """The adaptive step pays off: APGD's best loss beats the start for (nearly) every example."""
    model, x, y = trained
    amp = _autocast("off", x.device)
    x_best, loss_best, _, _ = _single_run(model, x, y, None, eps=0.1, norm="linf", steps=40, loss="ce", eot=1,
                                          rho=0.75, amp=amp, generator=torch.Generator().manual_seed(1),
                                          on_target=False)
    start = apgd.__globals__["_start"](x, 0.1, "linf", torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (loss_best >= F.cross_entropy(model(start), y, reduction="none") - 1e-6).all()


def test_restarts_only_add_fooled_examples_and_keep_the_first_run(trained):
    model, x, y = trained
    one = apgd(model, x, y, eps=0.08, steps=10, restarts=1, generator=torch.Generator().manual_seed(4))
    three = apgd(model, x, y, eps=0.08, steps=10, restarts=3, generator=torch.Generator().manual_seed(4))
    fooled_one, fooled_three = ~correct(model, one, y), ~correct(model, three, y)
    assert (fooled_three | ~fooled_one).all() and fooled_three.sum() >= fooled_one.sum()
    assert torch.equal(one[fooled_one], three[fooled_one])  # restarts leave fooled examples alone
    with torch.no_grad():  # never fooled: the highest-loss iterate of three runs is at least the first's
        kept = ~fooled_three
        l1 = F.cross_entropy(model(one[kept]), y[kept], reduction="none")
        l3 = F.cross_entropy(model(three[kept]), y[kept], reduction="none")
    assert (l3 >= l1 - 1e-6).all()


def test_dlr_closed_form_and_invariances():
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 5.0, 1.0]])
    y = torch.tensor([0, 1])
    # row 0: y on top, -(3 - 1)/(3 - 0); row 1: -(2 - 5)/(5 - 1)
    assert torch.allclose(dlr(z, y), torch.tensor([-2 / 3, 3 / 4]))
    t = torch.tensor([2, 3])
    # targeted: -(z_y - z_t)/(z_1 - (z_3 + z_4)/2): row 0 -(3 - 0)/(3 + 0.5); row 1 -(2 - 1)/(5 - 0.5)
    assert torch.allclose(dlr(z, y, t), torch.tensor([-3 / 3.5, -1 / 4.5]))
    assert torch.allclose(dlr(7 * z + 3, y), dlr(z, y)) and torch.allclose(dlr(7 * z + 3, y, t), dlr(z, y, t))


def test_eot_on_deterministic_model_equals_single_sample(trained):
    model, x, y = trained
    one = apgd(model, x, y, eps=0.1, steps=10, eot=1, generator=torch.Generator().manual_seed(2))
    three = apgd(model, x, y, eps=0.1, steps=10, eot=3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(correct(model, one, y), correct(model, three, y))
    assert (one - three).abs().max() < 1e-6


def test_eot_attacks_a_randomized_model_harder():
    """Input noise (std 1) scrambles single-draw gradients; averaging 16 draws recovers them (0.79 -> 0.45)."""
    torch.manual_seed(0)
    data = tiny_data(n_train=256, n_test=100, shape=SHAPE, classes=CLASSES, seed=5)
    base = mlp(1)
    x, y = data.tensors("train")
    opt = torch.optim.Adam(base.parameters(), lr=0.01)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(base(x), y).backward()
        opt.step()

    class Noisy(nn.Module):
        def forward(self, inp):
            return base(inp + torch.randn_like(inp))

    noisy, xt, yt = Noisy().eval(), *data.tensors("test")
    accs = {}
    for eot in (1, 16):
        torch.manual_seed(1)
        xa = apgd(noisy, xt, yt, eps=0.15, steps=10, eot=eot, generator=torch.Generator().manual_seed(0))
        accs[eot] = correct(base, xa, yt).float().mean().item()  # judged on the noise-free model
    assert accs[16] < accs[1] - 0.15, accs


def test_training_flag_untouched_and_no_parameter_grads(trained):
    model, x, y = trained
    for p in model.parameters():
        p.grad = None  # left by the fixture's training
    for mode in (True, False):
        model.train(mode)
        apgd(model, x[:8], y[:8], eps=0.1, steps=3, restarts=2)
        assert model.training is mode
    model.eval()
    assert all(p.grad is None for p in model.parameters())


def test_clear_errors():
    model, x, y = mlp(0), torch.rand(2, *SHAPE), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="target_classes"):
        apgd(model, x, y, eps=0.1, target=y, target_classes=2)
    three = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with pytest.raises(ValueError, match="dlr loss needs at least 4"):
        apgd(three, x, y, eps=0.1, loss="dlr", target_classes=2)


class TinyPlugin:
    @hookimpl
    def deepscope_register_datasets(self, register):
        register("tiny", lambda config: tiny_data(n_train=64, n_test=48, shape=SHAPE, classes=CLASSES), None)

    @hookimpl
    def deepscope_register_models(self, register):
        register("tiny-mlp", lambda config, info: mlp(0), None)

    @hookimpl
    def deepscope_register_attacks(self, register):
        attacks_config.register(register)


@pytest.mark.parametrize("extra", ["targeted = true\nloss = \"dlr\"", "target_classes = 3\nrestarts = 2", ""])
def test_apgd_stage_in_a_pipeline(extra):
    result = run_toml(f"""
        [run]
        name = "t"
        seed = 0
        [data]
        use = "tiny"
        [model]
        use = "tiny-mlp"
        [[stage]]
        do = "attack"
        use = "apgd"
        eps = 0.05
        steps = 5
        {extra}
        """, make_host(TinyPlugin()), track=False)
    m = result.metrics
    assert m["attack/apgd/robust_acc"] <= m["attack/apgd/clean_acc"]
    assert 0 < m["attack/apgd/max_linf"] <= 0.05 + 1e-6


def test_apgd_t_with_a_targeted_stage_is_a_config_error():
    with pytest.raises(Exception, match=r"stage\[0\]\.target_classes.*APGD-T") as info:
        run_toml("""
            [run]
            name = "t"
            seed = 0
            [data]
            use = "tiny"
            [model]
            use = "tiny-mlp"
            [[stage]]
            do = "attack"
            use = "apgd"
            targeted = true
            target_classes = 2
            """, make_host(TinyPlugin()), track=False)
    assert "targeted = false" in str(info.value)
