"""PyHessian (test-only peer) against our Hutchinson estimates, on the same model and batch."""

from __future__ import annotations

import math

import torch
from pyhessian import hessian as PyHessian
from torch import nn

from deepscope_goldilocks.hessian import FlatModel, LossHessian, cross_entropy, hutchinson


def test_hutchinson_trace_agrees_with_pyhessian_within_error_bars():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 10), nn.ReLU(), nn.Linear(10, 4)).double()
    x = torch.randn(64, 8, dtype=torch.float64)
    y = torch.randint(0, 4, (64,))
    flat = FlatModel(model)
    exact = torch.autograd.functional.hessian(lambda t: cross_entropy(flat.logits(t, x), y), flat.theta)
    ours = hutchinson(LossHessian(flat, [(x, y)]).matmul, flat.dim, 400, torch.Generator().manual_seed(1),
                      torch.float64)
    torch.manual_seed(2)
    samples = PyHessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False).trace(maxIter=400, tol=0.0)
    assert len(samples) == 400  # a list of v'Hv samples (tol=0 never stops early), not the mean
    peer = sum(samples) / len(samples)
    peer_se = torch.tensor(samples).std().item() / math.sqrt(len(samples))
    true = torch.trace(exact).item()
    assert abs(ours["trace"] - peer) < 4 * math.hypot(ours["trace_stderr"], peer_se)
    assert abs(ours["trace"] - true) < 4 * ours["trace_stderr"]
    assert abs(peer - true) < 4 * peer_se
    assert abs(ours["frobenius"] - exact.norm().item()) < 4 * ours["frobenius_stderr"]
