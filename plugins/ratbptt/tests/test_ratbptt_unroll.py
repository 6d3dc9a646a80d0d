"""The inner loop's oracles: full BPTT against a hand-written autograd unroll and finite differences, a
window against the full unroll with its prefix detached, the inner Adam against torch.optim.Adam,
activation checkpointing against plain storage, and graph memory flat in the unroll length."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from deepscope import SavedTensorMeter
from deepscope_ratbptt.unroll import InnerOptimizer, unroll


def _net(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).to(dtype)


def _problem(dtype=torch.float64, n=9):
    g = torch.Generator().manual_seed(1)
    x_syn = torch.randn(n, 6, generator=g, dtype=dtype).requires_grad_()
    y_syn = torch.arange(n) % 3
    x_real = torch.randn(20, 6, generator=g, dtype=dtype)
    y_real = torch.randint(0, 3, (20,), generator=g)
    return x_syn, y_syn, x_real, y_real


def _batches(x_syn, y_syn, seed=5, size=4):
    """A deterministic sequence of index draws, replayable: batch i uses the i-th draw."""
    g = torch.Generator().manual_seed(seed)
    order = [torch.randperm(len(y_syn), generator=g)[:size] for _ in range(64)]
    calls = iter(order)

    def batches(differentiable):
        idx = next(calls)
        x = x_syn[idx] if differentiable else x_syn.detach()[idx]
        return x, y_syn[idx]
    return batches, order


def _meta_loss(model, params, x_real, y_real):
    return nn.functional.cross_entropy(functional_call(model, params, (x_real,)), y_real)


def _reference_full_unroll(model, x_syn, y_syn, order, steps, optimizer, detach_before=0):
    """A plain differentiable unroll with torch ops only: what the window must equal."""
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    v2 = {k: torch.zeros_like(v) for k, v in params.items()}
    for t in range(steps):
        if t == detach_before:
            params = {k: p.detach().requires_grad_() for k, p in params.items()}
            m = {k: a.detach() for k, a in m.items()}
            v2 = {k: a.detach() for k, a in v2.items()}
        idx = order[t]
        xb = x_syn[idx] if t >= detach_before else x_syn.detach()[idx]
        loss = nn.functional.cross_entropy(functional_call(model, params, (xb,)), y_syn[idx])
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        new = {}
        for (k, p), g in zip(params.items(), grads):
            if optimizer.kind == "sgd":
                g = g + optimizer.weight_decay * p
                m[k] = g if t == 0 else optimizer.momentum * m[k] + g
                new[k] = p - optimizer.lr * m[k]
            else:
                m[k] = 0.9 * m[k] + 0.1 * g
                v2[k] = 0.999 * v2[k] + 0.001 * g * g
                mhat, vhat = m[k] / (1 - 0.9 ** (t + 1)), v2[k] / (1 - 0.999 ** (t + 1))
                new[k] = p - optimizer.lr * mhat / (vhat.sqrt() + 1e-8)
        params = new
    return params


def test_window_equal_to_unroll_is_full_bptt_against_a_plain_autograd_unroll():
    for optimizer in (InnerOptimizer("sgd", lr=0.1), InnerOptimizer("adam", lr=0.01)):
        model = _net()
        x_syn, y_syn, x_real, y_real = _problem()
        batches, order = _batches(x_syn, y_syn)
        final = unroll(model, dict(model.named_parameters()), optimizer, batches, start=0, window=6)
        ours = torch.autograd.grad(_meta_loss(model, final, x_real, y_real), x_syn)[0]
        ref = _reference_full_unroll(model, x_syn, y_syn, order, 6, optimizer)
        theirs = torch.autograd.grad(_meta_loss(model, ref, x_real, y_real), x_syn)[0]
        assert ours.abs().max() > 1e-6
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


def test_full_bptt_meta_gradient_matches_finite_differences():
    model = _net()
    x_syn, y_syn, x_real, y_real = _problem()
    optimizer = InnerOptimizer("sgd", lr=0.2, weight_decay=0.0)

    def meta(x):
        batches, _ = _batches(x, y_syn)
        final = unroll(model, dict(model.named_parameters()), optimizer, batches, start=0, window=4)
        return _meta_loss(model, final, x_real, y_real)

    grad = torch.autograd.grad(meta(x_syn), x_syn)[0]
    direction = torch.randn(x_syn.shape, dtype=x_syn.dtype, generator=torch.Generator().manual_seed(3))
    eps = 1e-6
    x0 = x_syn.detach()
    fd = (meta(x0 + eps * direction).detach() - meta(x0 - eps * direction).detach()) / (2 * eps)
    assert abs(fd.item() - (grad * direction).sum().item()) < 1e-8 * max(1.0, abs(fd.item()))


def test_a_window_equals_the_full_unroll_with_its_prefix_detached_and_differs_from_full_bptt():
    model = _net()
    x_syn, y_syn, x_real, y_real = _problem()
    optimizer = InnerOptimizer("adam", lr=0.05)
    batches, order = _batches(x_syn, y_syn)
    final = unroll(model, dict(model.named_parameters()), optimizer, batches, start=3, window=4)
    ours = torch.autograd.grad(_meta_loss(model, final, x_real, y_real), x_syn)[0]
    ref = _reference_full_unroll(model, x_syn, y_syn, order, 7, optimizer, detach_before=3)
    torch.testing.assert_close(ours, torch.autograd.grad(_meta_loss(model, ref, x_real, y_real), x_syn)[0],
                               rtol=1e-10, atol=1e-12)
    full = _reference_full_unroll(model, x_syn, y_syn, order, 7, optimizer)
    full_grad = torch.autograd.grad(_meta_loss(model, full, x_real, y_real), x_syn)[0]
    assert (ours - full_grad).abs().max() > 1e-6


def test_the_inner_adam_reproduces_torch_optim_adam():
    """Five graph-free Adam steps equal torch.optim.Adam's to float64 rounding (foreach and not)."""
    model = _net()
    x_syn, y_syn, _, _ = _problem()
    batches, order = _batches(x_syn, y_syn)
    final = unroll(model, dict(model.named_parameters()), InnerOptimizer("adam", lr=0.01), batches, start=5, window=0)
    for foreach in (False, True):
        twin = _net()
        opt = torch.optim.Adam(twin.parameters(), lr=0.01, foreach=foreach)
        for t in range(5):
            idx = order[t]
            opt.zero_grad()
            nn.functional.cross_entropy(twin(x_syn.detach()[idx]), y_syn[idx]).backward()
            opt.step()
        for name, p in twin.named_parameters():
            assert not torch.equal(p.detach(), dict(model.named_parameters())[name].detach()), name
            torch.testing.assert_close(final[name], p.detach(), rtol=0, atol=1e-14)


def test_activation_checkpointing_gives_the_same_meta_gradient():
    results = []
    for flag in (False, True):
        model = _net()
        x_syn, y_syn, x_real, y_real = _problem()
        batches, _ = _batches(x_syn, y_syn)
        final = unroll(model, dict(model.named_parameters()), InnerOptimizer("adam", lr=0.02), batches,
                       start=2, window=4, checkpoint_inner=flag)
        results.append(torch.autograd.grad(_meta_loss(model, final, x_real, y_real), x_syn)[0])
    torch.testing.assert_close(results[0], results[1], rtol=1e-10, atol=1e-12)


def _graph_bytes(start, window, checkpoint_inner=False):
    """Peak bytes held by the autograd graph over one meta-step."""
    model = _net(dtype=torch.float32)
    x_syn, y_syn, x_real, y_real = _problem(dtype=torch.float32)
    batches, _ = _batches(x_syn, y_syn)
    meter = SavedTensorMeter()
    with meter.track():
        final = unroll(model, dict(model.named_parameters()), InnerOptimizer("adam", lr=0.01), batches,
                       start=start, window=window, checkpoint_inner=checkpoint_inner)
        loss = _meta_loss(model, final, x_real, y_real)
    torch.autograd.grad(loss, x_syn)
    return meter.peak


def test_graph_memory_does_not_grow_with_the_unroll_at_a_fixed_window():
    assert _graph_bytes(start=5, window=3) == _graph_bytes(start=40, window=3)
    assert _graph_bytes(start=5, window=6) > _graph_bytes(start=5, window=3)
    assert _graph_bytes(start=5, window=6, checkpoint_inner=True) < _graph_bytes(start=5, window=6)


def _higher_meta_gradient(x_syn, y_syn, x_real, y_real, order, start, window, lr):
    """The official code's meta-step: a torch.optim.Adam prefix, then higher.innerloop_ctx for the window."""
    import higher

    twin = _net()
    opt = torch.optim.Adam(twin.parameters(), lr=lr)
    for t in range(start):
        opt.zero_grad()
        nn.functional.cross_entropy(twin(x_syn.detach()[order[t]]), y_syn[order[t]]).backward()
        opt.step()
    for state in opt.state.values():  # torch.optim counts steps in a float32 tensor, and higher would take
        state["step"] = int(state["step"])  # 1 - 0.999^t from it in float32 (5 digits lost): count exactly
    with higher.innerloop_ctx(twin, opt, copy_initial_weights=True) as (fnet, diffopt):
        for t in range(start, start + window):
            diffopt.step(nn.functional.cross_entropy(fnet(x_syn[order[t]]), y_syn[order[t]]))
        return torch.autograd.grad(nn.functional.cross_entropy(fnet(x_real), y_real), x_syn)[0]


def test_adam_eps_higher_reproduces_the_official_window_and_torch_eps_does_not():
    """`higher` (a test dependency) is the peer: with adam_eps = "higher" our window gives its meta-gradient
    to float64 rounding, from the first step and after a torch.optim prefix; torch's convention differs."""
    for start in (0, 2):
        grads = {}
        for convention in ("torch", "higher"):
            model = _net()
            x_syn, y_syn, x_real, y_real = _problem()
            batches, order = _batches(x_syn, y_syn)
            optimizer = InnerOptimizer("adam", lr=0.01, adam_eps=convention)
            final = unroll(model, dict(model.named_parameters()), optimizer, batches, start=start, window=3)
            grads[convention] = torch.autograd.grad(_meta_loss(model, final, x_real, y_real), x_syn)[0]
        peer = _higher_meta_gradient(x_syn, y_syn, x_real, y_real, order, start, 3, 0.01)
        torch.testing.assert_close(grads["higher"], peer, rtol=1e-9, atol=1e-12)
        # measured: 3e-4 (relative) with the window from the first step, 7e-6 after two prefix steps
        assert (grads["torch"] - peer).abs().max() > 1e-6 * peer.abs().max()
