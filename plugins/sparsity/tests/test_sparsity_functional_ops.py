"""Functional ops inside forward are linearized like their module twins (torch.fx), or warned about once."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from deepscope_sparsity import functional as functional_ops
from deepscope_sparsity import linearize
from deepscope_sparsity.effective import EffectiveMasks
from deepscope_sparsity.linearize import LinearizedNetwork
from sparsity_fakes import make_state


class Functional(nn.Module):
    """Every non-linearity a function call: relu, max-pool, a method call, adaptive max-pool, softmax."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.adaptive_max_pool2d(self.conv2(x).relu(), 2)
        return F.softmax(self.fc(torch.flatten(x, 1)), dim=1)


class Modules(nn.Module):
    """The same network with module layers (linearized by module replacement, tested elsewhere)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.adaptive = nn.AdaptiveMaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, 3)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):
        x = self.pool(self.act(self.conv1(x)))
        x = self.adaptive(self.act(self.conv2(x)))
        return self.softmax(self.fc(self.flatten(x)))


class DataDependent(Functional):
    def forward(self, x):
        if x.sum() > 0:  # control flow on a value: torch.fx cannot trace it
            x = F.relu(self.conv1(x))
        return self.fc(torch.flatten(F.adaptive_max_pool2d(self.conv2(x), 2), 1))


SHAPE = (1, 8, 8)


def twins():
    functional = make_state(Functional(), SHAPE)
    modules = make_state(Modules(), SHAPE)
    modules.model.load_state_dict(functional.model.state_dict())
    return functional, modules


def random_masks(state, density, gen):
    return {n: torch.rand(p.shape, generator=gen) < density for n, p in state.prunable().items()}


def test_effective_masks_and_synflow_path_sums_equal_the_module_twins():
    functional, modules = twins()
    fx_masks, module_masks = EffectiveMasks(functional.model, SHAPE), EffectiveMasks(modules.model, SHAPE)
    gen = torch.Generator().manual_seed(0)
    for density in (0.1, 0.2, 0.3, 0.5):
        for _ in range(10):
            masks = random_masks(functional, density, gen)
            a, b = fx_masks(masks), module_masks(masks)
            assert all(torch.equal(a[n], b[n]) for n in a)
    weights = {n: p.detach().abs() for n, p in functional.prunable().items()}
    a = LinearizedNetwork(functional.model, SHAPE).gradients(weights, binarize=False)
    b = LinearizedNetwork(modules.model, SHAPE).gradients(weights, binarize=False)
    assert all(torch.allclose(a[n], b[n], rtol=1e-12, atol=0) for n in a)


def test_without_the_rewrite_the_functional_max_pool_hides_connected_weights(monkeypatch):
    """The check above can fail: the module-only linearization keeps F.max_pool2d and disagrees."""
    functional, modules = twins()
    monkeypatch.setattr(linearize, "linearize_functional", lambda net, name: net)
    old, module_masks = EffectiveMasks(functional.model, SHAPE), EffectiveMasks(modules.model, SHAPE)
    masks = random_masks(functional, 0.5, torch.Generator().manual_seed(1))
    a, b = old(masks), module_masks(masks)
    assert sum(int(m.sum()) for m in a.values()) < sum(int(m.sum()) for m in b.values())


def test_a_model_that_does_not_trace_warns_once_naming_it(monkeypatch):
    monkeypatch.setattr(functional_ops, "_WARNED", set())
    state = make_state(DataDependent(), SHAPE)
    with pytest.warns(UserWarning, match=r"DataDependent: functional activations.*do(es)? not trace with torch\.fx"):
        EffectiveMasks(state.model, SHAPE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        masks = EffectiveMasks(state.model, SHAPE)({})  # the second build is silent, and still works
    assert all(m.any() for m in masks.values())


def test_models_without_functional_ops_are_not_rewritten():
    _, modules = twins()
    assert type(LinearizedNetwork(modules.model, SHAPE).net).__name__ == type(modules.model).__name__
    functional, _ = twins()
    assert isinstance(LinearizedNetwork(functional.model, SHAPE).net, torch.fx.GraphModule)
