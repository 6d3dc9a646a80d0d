"""Saliency scores of the pruners (higher = keep), one function each."""

from __future__ import annotations

import copy
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from .linearize import LinearizedNetwork
from .masking import put

Masks = dict[str, torch.Tensor]


def magnitude_scores(state) -> Masks:
    return {n: p.detach().abs().clone() for n, p in state.prunable().items()}


def random_scores(state, seed: int) -> Masks:
    """i.i.d. uniform scores; drawn once, so masks at growing density are nested."""
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=gen, dtype=torch.float64).to(p.device)
            for n, p in state.prunable().items()}


def lamp_scores(state) -> Masks:
    """LAMP: w_u^2 over the sum of w_v^2 for all v of the same layer at least as large."""
    out = {}
    for n, p in state.prunable().items():
        sq = p.detach().to(torch.float64).reshape(-1) ** 2
        order = torch.argsort(sq, stable=True)
        sorted_sq = sq[order]
        tail = torch.flip(torch.cumsum(torch.flip(sorted_sq, [0]), 0), [0])
        score = torch.empty_like(sq)
        score[order] = sorted_sq / (tail + 1e-8)
        out[n] = score.view(p.shape)
    return out


def sample_batches(state, samples: int, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Random training examples (a fixed draw per seed), in minibatches on the run's device."""
    train = state.data.train
    n = min(samples, len(train))
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(train, idx), batch_size=batch_size, shuffle=False)
    for x, y in loader:
        yield x.to(state.device), y.to(state.device).long()


def _grads(model: nn.Module, params: list[torch.Tensor], x, y, temperature: float = 1.0, create_graph=False):
    loss = F.cross_entropy(model(x) / temperature, y)
    return torch.autograd.grad(loss, params, create_graph=create_graph)


def snip_scores(state, samples: int, batch_size: int, seed: int) -> Masks:
    """SNIP: |g * w| with g the loss gradient averaged over minibatches (model in eval mode)."""
    params = state.prunable()
    names = list(params)
    total = [torch.zeros_like(p) for p in params.values()]
    batches = 0
    model = state.model
    was = model.training
    model.eval()
    try:
        for x, y in sample_batches(state, samples, batch_size, seed):
            for acc, g in zip(total, _grads(model, list(params.values()), x, y)):
                acc += g
            batches += 1
    finally:
        model.train(was)
    return {n: (g / max(batches, 1) * params[n].detach()).abs() for n, g in zip(names, total)}


def grasp_scores(state, samples: int, batch_size: int, seed: int, temperature: float) -> Masks:
    """GraSP: w * Hg with g the (temperature-softened) gradient, held fixed; removing the
    lowest w * Hg (the highest -w * Hg) least reduces gradient flow."""
    params = state.prunable()
    plist = list(params.values())
    model = state.model
    was = model.training
    model.eval()
    try:
        batches = list(sample_batches(state, samples, batch_size, seed))
        g_fixed = [torch.zeros_like(p) for p in plist]
        for x, y in batches:
            for acc, g in zip(g_fixed, _grads(model, plist, x, y, temperature)):
                acc += g.detach()
        hg = [torch.zeros_like(p) for p in plist]
        for x, y in batches:
            g = _grads(model, plist, x, y, temperature, create_graph=True)
            z = sum((gi * fi).sum() for gi, fi in zip(g, g_fixed))
            for acc, h in zip(hg, torch.autograd.grad(z, plist)):
                acc += h
    finally:
        model.train(was)
    return {n: (p.detach() * h).to(torch.float64) for (n, p), h in zip(params.items(), hg)}


class SynFlowScorer:
    """Synaptic saliency |w| * dR/d|w| of the linearized network (float64 unless asked, no 0/1
    resets, so scores of residual branches keep their true ratios).

    Besides the per-layer call it is a :class:`~deepscope_sparsity.masking.FlatScorer`: the
    linearized weights are views of one flat vector of masked |w|, so a pruning step zeroes the
    pruned entries in place and a score is one forward/backward pass and one product.
    """

    def __init__(self, state, dtype: torch.dtype = torch.float64):
        self.linear = LinearizedNetwork(state.model, state.info.input_shape, list(state.prunable()), dtype=dtype)
        device = self.linear.device
        self.weights = {n: p.detach().abs().to(device, dtype) for n, p in state.prunable().items()}
        self.flat_weights = torch.cat([w.reshape(-1) for w in self.weights.values()])
        self.masked = self.flat_weights.clone()
        self.linear.bind(self.masked)
        self._grad = torch.empty_like(self.masked)

    def __call__(self, mask: Masks) -> Masks:
        masked = {n: w * mask[n] for n, w in self.weights.items()}
        grads = self.linear.gradients(masked, binarize=False)
        return {n: grads[n] * masked[n] for n in masked}

    def start(self, alive: torch.Tensor) -> None:
        torch.mul(self.flat_weights, alive.to(self.masked.device), out=self.masked)

    def drop(self, index: torch.Tensor) -> None:
        put(self.masked, index, 0)

    def flat_scores(self) -> torch.Tensor:
        return self.linear.flat_gradient(self._grad).mul_(self.masked)


class SnipAtMask:
    """SNIP scores of the initial weights under a changing mask, one minibatch per call."""

    def __init__(self, state, batch_size: int, seed: int):
        self.model = copy.deepcopy(state.model).eval()
        self.params = {n: p for n, p in dict(self.model.named_parameters()).items() if n in state.prunable()}
        self.initial = {n: p.detach().clone() for n, p in self.params.items()}
        self.state = state
        self.batch_size = batch_size
        self.seed = seed
        self._batches = self._forever()

    def _forever(self):
        epoch = 0
        while True:
            yield from sample_batches(self.state, len(self.state.data.train), self.batch_size, self.seed + epoch)
            epoch += 1

    def __call__(self, mask: Masks) -> Masks:
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(self.initial[n] * mask[n])
        x, y = next(self._batches)
        grads = _grads(self.model, list(self.params.values()), x, y)
        return {n: (g * p.detach()).abs() for (n, p), g in zip(self.params.items(), grads)}
