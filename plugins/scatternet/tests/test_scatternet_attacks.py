"""EOT-PGD on noisy models (Square's tests live with it in plugins/standard/tests/test_attacks_square.py)."""

from __future__ import annotations

import torch
from torch import nn

from deepscope_scatternet.noise import GaussianNoise
from deepscope.testing import tiny_data


class NoisyMLP(nn.Module):
    """Noise inside the nonlinearity, so one-draw gradients are noisy estimates of the expected one."""

    def __init__(self, inputs: int, classes: int, std: float):
        super().__init__()
        self.fc1 = nn.Linear(inputs, 32)
        self.noise = GaussianNoise(std)
        self.fc2 = nn.Linear(32, classes)

    def forward(self, x):
        return self.fc2(torch.relu(self.noise(self.fc1(x.flatten(1)))))


def trained_noisy_mlp(std: float):
    torch.manual_seed(0)
    data = tiny_data(n_train=256, n_test=128, shape=(1, 6, 6), classes=3, seed=1)
    model = NoisyMLP(36, 3, std)
    x, y = data.tensors("train")
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), data.tensors("test")


def mean_accuracy(model, x, y, draws=64):
    torch.manual_seed(123)
    with torch.no_grad():
        return torch.stack([(model(x).argmax(1) == y).float().mean() for _ in range(draws)]).mean().item()


def test_standard_pgd_with_eot_is_at_least_as_strong_on_a_noisy_model():
    from deepscope_standard import pgd

    model, (x, y) = trained_noisy_mlp(std=2.0)
    torch.manual_seed(0)
    plain = pgd(model, x, y, eps=0.1, steps=10, eot=1, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    eot = pgd(model, x, y, eps=0.1, steps=10, eot=16, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(eot, plain)  # the 16 gradient samples changed the iterates
    assert mean_accuracy(model, eot, y) <= mean_accuracy(model, plain, y)
    assert mean_accuracy(model, eot, y) < mean_accuracy(model, x, y)
