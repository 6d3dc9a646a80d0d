"""Oracles of the matching inner loop: the loss is exactly 1 with no step or a zero lr, d loss / d lr
matches central finite differences, the flat-vector unroll equals a per-parameter (module-dict) one,
and activation checkpointing changes nothing but memory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from deepscope_galaxy.matching import batch_schedule, matching_loss, unroll
from deepscope_standard import DSA, flatten_params, sgd_step


def _problem(dtype=torch.float64, n=6, seed=0):
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 36, 3)).to(dtype)
    like = {k: v.detach() for k, v in body.named_parameters()}
    start = flatten_params(like).clone()
    target = start + 0.05 * torch.randn_like(start)
    images = torch.randn(n, 1, 6, 6, dtype=dtype, requires_grad=True)
    labels = torch.arange(3).repeat_interleave(n // 3)
    return body, like, start, target, images, labels


def _loss(problem, lr, steps, batch=None, augment=None, checkpoint=False, seed=1):
    body, like, start, target, images, labels = problem
    batches = batch_schedule(len(labels), batch, steps, torch.Generator().manual_seed(seed))
    final = unroll(body, like, start, images, labels, lr, batches, augment, checkpoint=checkpoint)
    return matching_loss(final, start, target)


def test_zero_steps_or_zero_lr_give_a_loss_of_exactly_one():
    problem = _problem(torch.float32)
    assert _loss(problem, torch.tensor(0.1), steps=0).item() == 1.0
    assert _loss(problem, torch.tensor(0.0), steps=5, batch=2).item() == 1.0
    assert _loss(problem, torch.tensor(0.1), steps=5, batch=2).item() != 1.0


def test_the_lr_gradient_matches_central_finite_differences():
    problem = _problem()
    dsa = DSA("scale_rotate")
    augment = lambda x, step: dsa(x, seed=100 + step)  # noqa: E731 (the same draws at every evaluation)
    lr = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(_loss(problem, lr, steps=4, batch=4, augment=augment), lr)
    h = 1e-6
    plus = _loss(problem, torch.tensor(0.3 + h, dtype=torch.float64), 4, 4, augment).item()
    minus = _loss(problem, torch.tensor(0.3 - h, dtype=torch.float64), 4, 4, augment).item()
    assert grad.item() == pytest.approx((plus - minus) / (2 * h), rel=1e-6)
    assert abs(grad.item()) > 1e-6


def _module_unroll(body, like, images, labels, lr, batches):
    """The reference: per-parameter tensors, torch.func.functional_call, deepscope_standard.sgd_step."""
    params = {k: v.clone().requires_grad_() for k, v in like.items()}
    for idx in batches:
        loss = F.cross_entropy(functional_call(body, params, (images[idx],)), labels[idx])
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        params, _ = sgd_step(params, dict(zip(params, grads)), lr)
    return flatten_params(params)


def test_the_flat_unroll_equals_the_module_based_one_values_and_gradients():
    body, like, start, target, images, labels = _problem()
    lr = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    batches = batch_schedule(len(labels), 4, 5, torch.Generator().manual_seed(3))
    flat = unroll(body, like, start, images, labels, lr, batches)
    reference = _module_unroll(body, like, images, labels, lr, batches)
    torch.testing.assert_close(flat, reference, rtol=1e-13, atol=1e-13)
    g_flat = torch.autograd.grad(matching_loss(flat, start, target), (images, lr))
    g_ref = torch.autograd.grad(matching_loss(reference, start, target), (images, lr))
    for a, b in zip(g_flat, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_checkpointing_the_unroll_gives_the_same_loss_and_gradients():
    problem = _problem()
    images = problem[4]
    lr = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    plain = _loss(problem, lr, steps=6, batch=3)
    checked = _loss(problem, lr, steps=6, batch=3, checkpoint=True)
    assert plain.item() == checked.item()
    for a, b in zip(torch.autograd.grad(plain, (images, lr)), torch.autograd.grad(checked, (images, lr))):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_the_batch_schedule_takes_chunks_of_a_permutation_from_the_end_and_covers_each_pass():
    batches = batch_schedule(7, 3, 6, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [1, 3, 3, 1, 3, 3]  # the short last chunk is popped first
    assert sorted(torch.cat(batches[:3]).tolist()) == list(range(7))
    assert all(len(b) == 5 for b in batch_schedule(5, None, 3, torch.Generator()))
