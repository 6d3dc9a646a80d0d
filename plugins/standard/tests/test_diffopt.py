"""Differentiable SGD/Adam: K steps equal torch.optim's bit for bit, gradients flow to lr and to the inputs,
and the hand-written backward passes of the updates pass gradcheck."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from deepscope_standard import adam_step, flatten_params, sgd_step, unflatten_params

K = 6


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def batches(seed=1, k=K):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g))
            for _ in range(k)]


def torch_optim_run(make_opt, data):
    model = tiny_model()
    opt = make_opt(model.parameters())
    for x, y in data:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return {k: v.detach() for k, v in model.named_parameters()}


def functional_run(step, data, model=None, lr=None, create_graph=False, **kw):
    model = model or tiny_model()
    params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
    state = None
    for x, y in data:
        loss = F.cross_entropy(functional_call(model, params, (x,)), y)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
        params, state = step(params, dict(zip(params, grads)), lr, state=state, **kw)
        if not create_graph:
            params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    return params, state


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("kw", [dict(momentum=0.0), dict(momentum=0.9), dict(momentum=0.9, weight_decay=5e-4),
                                dict(momentum=0.5, dampening=0.1, weight_decay=1e-2),
                                dict(momentum=0.9, nesterov=True)])
def test_sgd_steps_equal_torch_optim_sgd(kw, foreach):
    data = batches()
    expected = torch_optim_run(lambda p: torch.optim.SGD(p, lr=0.1, foreach=foreach, **kw), data)
    got, _ = functional_run(sgd_step, data, lr=0.1, **kw)
    for name in expected:
        assert torch.equal(got[name], expected[name]), name  # the same arithmetic, bit for bit


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("kw", [dict(), dict(weight_decay=5e-4), dict(betas=(0.5, 0.9), eps=1e-6)])
def test_adam_steps_equal_torch_optim_adam(kw, foreach):
    data = batches()
    expected = torch_optim_run(lambda p: torch.optim.Adam(p, lr=0.01, foreach=foreach, **kw), data)
    got, state = functional_run(adam_step, data, lr=0.01, **kw)
    assert state["step"] == K
    for name in expected:
        assert torch.equal(got[name], expected[name]), name  # the same arithmetic, bit for bit


def test_a_parameter_without_gradient_is_kept():
    p = {"a": torch.ones(2), "b": torch.ones(2)}
    for step in (sgd_step, adam_step):
        new, _ = step(p, {"a": torch.ones(2), "b": None}, 0.1)
        assert new["b"] is p["b"] and not torch.equal(new["a"], p["a"])


def outer_loss(step, x_syn, y_syn, lr, x_real, y_real, steps=3, **kw):
    """Train a tiny model on the synthetic batch with the functional optimizer, return the real loss."""
    model = tiny_model(3)
    params = dict(model.named_parameters())
    state = None
    for _ in range(steps):
        loss = F.cross_entropy(functional_call(model, params, (x_syn,)), y_syn)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        params, state = step(params, dict(zip(params, grads)), lr, state=state, **kw)
    return F.cross_entropy(functional_call(model, params, (x_real,)), y_real)


@pytest.mark.parametrize("step,kw", [(sgd_step, dict(momentum=0.9, weight_decay=5e-4)),
                                     (adam_step, dict(weight_decay=5e-4))])
def test_hypergradients_match_finite_differences(step, kw):
    (x_syn, y_syn), (x_real, y_real) = batches(seed=7, k=2)
    x_syn = x_syn.clone().requires_grad_(True)
    lr = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    loss = outer_loss(step, x_syn, y_syn, lr, x_real, y_real, **kw)
    g_x, g_lr = torch.autograd.grad(loss, [x_syn, lr])
    h = 1e-6
    fd_lr = (outer_loss(step, x_syn.detach(), y_syn, lr.detach() + h, x_real, y_real, **kw)
             - outer_loss(step, x_syn.detach(), y_syn, lr.detach() - h, x_real, y_real, **kw)) / (2 * h)
    assert g_lr.item() == pytest.approx(fd_lr.item(), rel=1e-5, abs=1e-9)
    assert g_lr.abs().item() > 1e-4  # a real signal, not a vanishing one
    for i, j in [(0, 0), (3, 2), (7, 4)]:
        e = torch.zeros_like(x_syn)
        e[i, j] = h
        fd = (outer_loss(step, x_syn.detach() + e, y_syn, lr.detach(), x_real, y_real, **kw)
              - outer_loss(step, x_syn.detach() - e, y_syn, lr.detach(), x_real, y_real, **kw)) / (2 * h)
        assert g_x[i, j].item() == pytest.approx(fd.item(), rel=1e-5, abs=1e-9)


def test_adam_hypergradient_is_finite_where_a_gradient_is_exactly_zero():
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    p = {"w": torch.tensor([0.5, 0.0], dtype=torch.float64)}
    g = {"w": x * torch.tensor([1.0, 0.0], dtype=torch.float64)}  # the second gradient is exactly 0
    new, _ = adam_step(p, g, 0.1)
    (grad,) = torch.autograd.grad(new["w"].sum(), x)
    assert torch.isfinite(grad).all()
    assert new["w"][1].item() == 0.0


def test_flat_parameters_round_trip():
    model = tiny_model()
    params = dict(model.named_parameters())
    flat = flatten_params(params)
    assert flat.numel() == sum(p.numel() for p in params.values())
    back = unflatten_params(flat, params)
    assert list(back) == list(params) and all(torch.equal(back[k], params[k]) for k in params)
    with pytest.raises(ValueError, match="entries"):
        unflatten_params(flat[:-1], params)


@pytest.mark.parametrize("step", [0, 3])
def test_the_adam_update_backward_passes_gradcheck_in_every_input(step):
    """The hand-written backward of one Adam update against finite differences (torch.autograd.gradcheck),
    with respect to the parameter, the gradient, both moments and a tensor lr, all outputs at once."""
    g = torch.Generator().manual_seed(2)

    def leaf(*shape, positive=False):
        t = torch.randn(*shape, generator=g, dtype=torch.float64)
        return (t.abs() + 0.1 if positive else t).requires_grad_()

    p, grad, m, v, lr = leaf(4, 3), leaf(4, 3), leaf(4, 3), leaf(4, 3, positive=True), leaf(1, positive=True)

    def update(p, grad, m, v, lr):
        state = {"step": step, "exp_avg": {"w": m}, "exp_avg_sq": {"w": v}} if step else None
        new, state = adam_step({"w": p}, {"w": grad}, lr, state=state, eps=1e-3)
        return new["w"], state["exp_avg"]["w"], state["exp_avg_sq"]["w"]

    assert torch.autograd.gradcheck(update, (p, grad, m, v, lr))


@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("kw", [dict(momentum=0.9), dict(momentum=0.5, dampening=0.1, weight_decay=1e-2),
                                dict(momentum=0.9, nesterov=True, weight_decay=5e-4)])
def test_the_sgd_update_backward_passes_gradcheck_in_every_input(kw, first):
    g = torch.Generator().manual_seed(3)
    p, grad, buf = (torch.randn(4, 3, generator=g, dtype=torch.float64).requires_grad_() for _ in range(3))
    lr = torch.rand(1, generator=g, dtype=torch.float64).requires_grad_()

    def update(p, grad, buf, lr):
        state = None if first else {"momentum_buffer": {"w": buf}}
        new, state = sgd_step({"w": p}, {"w": grad}, lr, state=state, **kw)
        return new["w"], state["momentum_buffer"]["w"]

    assert torch.autograd.gradcheck(update, (p, grad, buf, lr))
