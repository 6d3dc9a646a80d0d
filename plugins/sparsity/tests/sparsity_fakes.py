"""Small models and a run state for the sparsity tests (no standard plugin needed)."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from deepscope import Network, RunState
from deepscope.testing import tiny_data


def mlp(widths, bn=False, seed=0):
    torch.manual_seed(seed)
    layers = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            if bn:
                layers.append(nn.BatchNorm1d(b))
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ResidualNet(nn.Module):
    """stem conv -> (x + conv2(relu(conv1(x)))) -> pool -> linear."""

    def __init__(self, channels=3, width=4, classes=3):
        super().__init__()
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(width * 4, classes)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = x + self.conv2(torch.relu(self.bn(self.conv1(x))))
        return self.head(self.pool(x).flatten(1))


def make_state(body, input_shape=(1, 4, 4), classes=3, seed=0, n_train=64):
    data = tiny_data(n_train=n_train, shape=input_shape, classes=classes, seed=seed)
    model = Network(body, data.info.mean, data.info.std)
    pipeline = SimpleNamespace(run=SimpleNamespace(seed=seed))
    state = RunState(pipeline=pipeline, host=None, device=torch.device("cpu"), data=data, model=model)
    state.init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return state
