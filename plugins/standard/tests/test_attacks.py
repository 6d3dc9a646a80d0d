"""Oracles for fgsm/pgd: closed forms, invariants, brute force, and torchattacks as a peer."""

from __future__ import annotations

import attrs
import pytest
import torch
import torch.nn.functional as F
import torchattacks
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from deepscope_standard import attacks_config
from deepscope_standard.attacks import FGSM, PGD, adversarial_objective, attack_succeeded, fgsm, pgd
from deepscope import Network, hookimpl
from deepscope.testing import make_host, run_toml, tiny_data

SHAPE = (1, 6, 6)
CLASSES = 3


def small_net(seed: int = 0, hidden: int = 16) -> Network:
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Flatten(), nn.Linear(36, hidden), nn.ReLU(), nn.Linear(hidden, CLASSES))
    return Network(body, (0.5,), (0.25,))


@pytest.fixture(scope="module")
def trained():
    """A small MLP trained to ~100% on tiny_data, and 128 test examples."""
    data = tiny_data(n_train=256, n_test=128, shape=SHAPE, classes=CLASSES, seed=1)
    model = small_net(seed=1)
    x, y = data.tensors("train")
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    xt, yt = data.tensors("test")
    return model, xt, yt


def robust_acc(model, x_adv, y) -> float:
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eps_zero_leaves_inputs_unchanged(trained, norm):
    model, x, y = trained
    assert torch.equal(pgd(model, x, y, eps=0.0, norm=norm, steps=3, restarts=2), x)
    assert torch.equal(fgsm(model, x, y, eps=0.0, norm=norm), x)


@settings(max_examples=40, deadline=None)
@given(norm=st.sampled_from(["linf", "l2"]), eps=st.floats(0.0, 2.0), steps=st.integers(1, 3),
       restarts=st.integers(1, 2), random_start=st.booleans(), step_size=st.floats(0.01, 3.0),
       targeted=st.booleans(), seed=st.integers(0, 2**16), loss=st.sampled_from(["ce", "margin"]))
def test_outputs_inside_ball_and_unit_box(norm, eps, steps, restarts, random_start, step_size, targeted, seed,
                                          loss):
    g = torch.Generator().manual_seed(seed)
    model = small_net(seed)
    x = torch.rand((5, *SHAPE), generator=g)
    x[0] = 0.0  # inputs on the box's faces
    x[1] = 1.0
    y = torch.randint(0, CLASSES, (5,), generator=g)
    target = (y + 1) % CLASSES if targeted else None
    x_adv = pgd(model, x, y, eps=eps, norm=norm, steps=steps, restarts=restarts, random_start=random_start,
                step_size=step_size, target=target, loss=loss, generator=g)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps * (1 + 1e-6) + 1e-6).all(), (size.max().item(), eps)


@pytest.mark.parametrize("norm,epsilons", [("linf", [0.0, 0.05, 0.1, 0.2, 0.3]), ("l2", [0.0, 0.25, 0.5, 1.0, 2.0])])
def test_robust_accuracy_non_increasing_in_eps(trained, norm, epsilons):
    model, x, y = trained
    accs = []
    for eps in epsilons:
        torch.manual_seed(0)
        accs.append(robust_acc(model, pgd(model, x, y, eps=eps, norm=norm, steps=20), y))
    assert accs[0] > 0.9 and accs[-1] < accs[0] - 0.3, accs  # the attack does bite
    assert all(b <= a for a, b in zip(accs, accs[1:])), accs


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_on_linear_model_matches_closed_form(targeted):
    torch.manual_seed(3)
    linear = nn.Linear(36, CLASSES).double()
    model = nn.Sequential(nn.Flatten(), linear)
    x = 0.2 + 0.6 * torch.rand(8, *SHAPE, dtype=torch.float64)
    x[:2] = torch.rand(2, *SHAPE, dtype=torch.float64)  # some coordinates get clipped at 0 or 1
    y = torch.randint(0, CLASSES, (8,))
    t = (y + 1) % CLASSES
    labels = t if targeted else y
    eps = 0.1
    with torch.no_grad():
        # d CE(Wx + b, c) / dx = W^T (softmax(Wx + b) - onehot(c)); a targeted attack descends it
        p = torch.softmax(x.flatten(1) @ linear.weight.T + linear.bias, 1)
        grad = (p - F.one_hot(labels, CLASSES).double()) @ linear.weight
        grad = -grad if targeted else grad
    expected = (x.flatten(1) + eps * grad.sign()).clamp(0, 1).view_as(x)
    got = fgsm(model, x, y, eps=eps, target=t if targeted else None)
    assert torch.allclose(got, expected, atol=1e-12, rtol=0)
    expected_l2 = (x.flatten(1) + eps * grad / grad.norm(dim=1, keepdim=True)).clamp(0, 1).view_as(x)
    got_l2 = fgsm(model, x, y, eps=eps, norm="l2", target=t if targeted else None)
    assert torch.allclose(got_l2, expected_l2, atol=1e-12, rtol=0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eot_on_deterministic_model_equals_single_sample(trained, norm):
    model, x, y = trained
    torch.manual_seed(5)
    one = pgd(model, x, y, eps=0.1 if norm == "linf" else 0.5, norm=norm, steps=5, eot=1)
    torch.manual_seed(5)
    three = pgd(model, x, y, eps=0.1 if norm == "linf" else 0.5, norm=norm, steps=5, eot=3)
    if norm == "linf":
        assert torch.equal(one, three)
    else:  # (g + g + g) / |g + g + g| differs from g / |g| by rounding only
        assert torch.allclose(one, three, atol=1e-6, rtol=0)


class CountingModel(nn.Module):
    """Counts forward passes and the mode each ran in; optionally stochastic (dropout)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.calls: list[bool] = []

    def forward(self, x):
        self.calls.append(self.training)
        return self.inner(x)


@pytest.mark.parametrize("steps,eot,restarts", [(4, 1, 1), (3, 2, 1), (2, 3, 2)])
def test_one_forward_per_step_and_eot_sample_and_no_parameter_grads(steps, eot, restarts):
    model = CountingModel(small_net(0))
    x, y = torch.rand(4, *SHAPE), torch.randint(0, CLASSES, (4,))
    pgd(model, x, y, eps=0.1, steps=steps, eot=eot, restarts=restarts)
    # restarts > 1: one extra gradient-free forward per restart to compare restarts
    assert len(model.calls) == restarts * steps * eot + (restarts if restarts > 1 else 0)
    assert all(p.grad is None for p in model.parameters())


def test_eot_averages_gradients_of_a_stochastic_model():
    """With dropout active, eot=k draws k different masks per step: k forwards, and a different result."""
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Flatten(), nn.Linear(36, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, CLASSES))
    model = CountingModel(inner).train()
    x, y = torch.rand(16, *SHAPE), torch.randint(0, CLASSES, (16,))
    torch.manual_seed(1)
    a = pgd(model, x, y, eps=0.1, steps=3, eot=1, random_start=False)
    torch.manual_seed(1)
    b = pgd(model, x, y, eps=0.1, steps=3, eot=4, random_start=False)
    assert len(model.calls) == 3 + 12
    assert not torch.equal(a, b)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("attack_cls", [FGSM, PGD])
def test_model_training_flag_unchanged(mode, attack_cls):
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.2), nn.Flatten(),
                         nn.Linear(64, CLASSES))
    model = CountingModel(Network(body, (0.5,), (0.25,)))
    model.train(mode == "train")
    config_cls = attacks_config.PGDConfig if attack_cls is PGD else attacks_config.FGSMConfig
    attack = attack_cls(config_cls(eps=0.1))
    attack.perturb(model, torch.rand(4, *SHAPE), torch.randint(0, CLASSES, (4,)))
    assert all(m.training == (mode == "train") for m in model.modules())
    assert set(model.calls) == {mode == "train"}  # every forward saw the caller's mode


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_targeted_attack_raises_target_probability(trained, norm, eps):
    model, x, y = trained
    target = (y + 1) % CLASSES
    x_adv = pgd(model, x, y, eps=eps, norm=norm, steps=10, target=target)
    with torch.no_grad():
        before = model(x).softmax(1).gather(1, target[:, None]).squeeze(1)
        after = model(x_adv).softmax(1).gather(1, target[:, None]).squeeze(1)
    assert (after >= before - 1e-6).float().mean() > 0.95
    assert after.mean() > before.mean() + 0.1
    with torch.no_grad():
        hits_before = attack_succeeded(model(x), y, target).float().mean()
        hits_after = attack_succeeded(model(x_adv), y, target).float().mean()
    assert hits_after > hits_before + 0.1


def test_restarts_keep_each_examples_best_restart(trained):
    model, x, y = trained
    settings_ = dict(eps=0.06, norm="linf", steps=3, step_size=0.03)
    torch.manual_seed(11)
    runs = [pgd(model, x, y, restarts=1, **settings_) for _ in range(3)]
    torch.manual_seed(11)
    best = pgd(model, x, y, restarts=3, **settings_)
    # brute force: per example, a fooling restart beats any other; then the highest loss; first wins ties
    with torch.no_grad():
        logits = [model(r) for r in runs]
    expected = torch.empty_like(x)
    for i in range(len(x)):
        key = [(bool(attack_succeeded(lg[i:i + 1], y[i:i + 1])), float(adversarial_objective(lg[i:i + 1], y[i:i + 1])),
                -k) for k, lg in enumerate(logits)]
        expected[i] = runs[max(range(3), key=lambda k: key[k])][i]
    assert torch.equal(best, expected)
    assert robust_acc(model, best, y) <= min(robust_acc(model, r, y) for r in runs)


def test_margin_loss_is_the_logit_margin():
    logits = torch.tensor([[2.0, 5.0, 1.0], [0.0, -1.0, 3.0]])
    y = torch.tensor([1, 0])
    assert torch.equal(adversarial_objective(logits, y, loss="margin"), torch.tensor([2.0 - 5.0, 3.0 - 0.0]))
    t = torch.tensor([2, 2])
    assert torch.equal(adversarial_objective(logits, y, t, loss="margin"), torch.tensor([1.0 - 5.0, 3.0 - 0.0]))


# --------------------------------------------------------------------------- torchattacks as a peer


def test_same_iterates_as_torchattacks_without_random_start(trained):

    model, x, y = trained
    theirs = torchattacks.PGD(model, eps=0.1, alpha=0.02, steps=10, random_start=False)(x, y)
    ours = pgd(model, x, y, eps=0.1, step_size=0.02, steps=10, random_start=False)
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=0)
    peer = torchattacks.PGDL2(model, eps=0.8, alpha=0.2, steps=10, random_start=False)
    # torchattacks divides by |g| + 1e-10 with a batch-mean loss, which shortens the steps of confident
    # examples (|g| ~ 1e-8 here); make its normalization exact, as ours is
    peer.eps_for_division = 1e-30
    theirs = peer(x, y)
    ours = pgd(model, x, y, eps=0.8, norm="l2", step_size=0.2, steps=10, random_start=False)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm,eps,alpha", [("linf", 0.12, 0.03), ("l2", 0.6, 0.15)])
def test_same_robust_accuracy_as_torchattacks(trained, norm, eps, alpha):

    model, x, y = trained
    peer = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=10) if norm == "linf" else \
        torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=10)
    torch.manual_seed(0)
    theirs = robust_acc(model, peer(x, y), y)
    torch.manual_seed(0)
    ours = robust_acc(model, pgd(model, x, y, eps=eps, norm=norm, step_size=alpha, steps=10), y)
    clean = robust_acc(model, x, y)
    assert 0.2 < theirs < clean - 0.3  # a regime where the attack matters, and not always wins
    # linf: the same random start (uniform in the box); l2: ours is uniform in the ball, theirs uniform
    # in radius, so a few of the 128 examples flip
    assert abs(ours - theirs) <= 0.05, (ours, theirs)


@pytest.mark.gpu
@pytest.mark.parametrize("autocast", ["bf16", "fp16"])
def test_mixed_precision_and_channels_last_on_cuda(autocast):
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 8 * 8, CLASSES))
    model = Network(body, (0.5,) * 3, (0.25,) * 3).cuda().eval().to(memory_format=torch.channels_last)
    x, y = torch.rand(64, 3, 8, 8, device="cuda"), torch.randint(0, CLASSES, (64,), device="cuda")
    x_adv = pgd(model, x, y, eps=0.05, steps=5, autocast=autocast, channels_last=True, random_start=False)
    reference = pgd(model, x, y, eps=0.05, steps=5, random_start=False)
    assert x_adv.dtype == torch.float32 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= 0.05 + 1e-6
    with torch.no_grad():
        loss_mixed = F.cross_entropy(model(x_adv), y)
        loss_fp32 = F.cross_entropy(model(reference), y)
        clean = F.cross_entropy(model(x), y)
    assert loss_mixed > clean and loss_mixed > 0.8 * loss_fp32  # as strong as the float32 attack, up to noise


# --------------------------------------------------------------------------- registry and attack stage


class TinyPlugin:
    @hookimpl
    def deepscope_register_datasets(self, register):
        register("tiny", lambda config: tiny_data(n_train=64, n_test=48, shape=SHAPE, classes=CLASSES), None)

    @hookimpl
    def deepscope_register_models(self, register):
        register("tiny-mlp", lambda config, info: small_net(0).body, None)

    @hookimpl
    def deepscope_register_attacks(self, register):
        attacks_config.register(register)


@pytest.mark.parametrize("use,extra", [("pgd", "steps = 3\nrestarts = 2"), ("fgsm", "norm = \"l2\"")])
def test_attack_stage_in_a_pipeline(use, extra):
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
        use = "{use}"
        eps = 0.05
        targeted = true
        {extra}
        """, make_host(TinyPlugin()), track=False)
    m = result.metrics
    key = f"attack/{use}"
    assert m[f"{key}/robust_acc"] <= m[f"{key}/clean_acc"]
    bound = m[f"{key}/max_linf"] if use == "pgd" else m[f"{key}/max_l2"]
    assert 0 < bound <= 0.05 + 1e-6
    assert f"{key}/target_success" in m


def test_config_validation_messages():
    from deepscope import structure_config

    _, issues = structure_config(attacks_config.PGDConfig, {"eps": -0.1, "norm": "l1", "steps": 0}, "$.stage[0]",
                                 what="attack 'pgd'")
    text = "\n".join(str(i) for i in issues)
    assert "$.stage[0].eps" in text and "$.stage[0].norm" in text and "$.stage[0].steps" in text
    config = attacks_config.PGDConfig(eps=0.3)
    assert attrs.asdict(config)["step_size"] is None and config.restarts == 1


def test_ascend_with_a_constant_gradient_reaches_the_corner_of_the_feasible_box():
    from deepscope_standard.attacks import ascend, project

    x = torch.tensor([[0.0, 0.5, 0.98]])
    far = project(x, x + 5.0, 0.1, "linf")
    assert torch.allclose(far, torch.tensor([[0.1, 0.6, 1.0]]))
    up = ascend(x, x.clone(), lambda xa: torch.ones_like(xa), eps=0.1, step_size=0.03, steps=10, norm="linf")
    assert torch.allclose(up, torch.tensor([[0.1, 0.6, 1.0]]))
    l2 = ascend(x, x.clone(), lambda xa: torch.ones_like(xa), eps=0.1, step_size=0.05, steps=10, norm="l2")
    assert (l2 - x).norm() <= 0.1 + 1e-6 and l2.min() >= 0 and l2.max() <= 1
