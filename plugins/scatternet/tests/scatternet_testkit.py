"""Small components for the scatternet tests (a plugin object for make_host)."""

from __future__ import annotations

import attrs
import torch
from torch import nn
from torch.utils.data import TensorDataset

from deepscope import hookimpl, param, positive
from deepscope import DataBundle, DatasetInfo
from deepscope.testing import tiny_data


@attrs.define
class StripesConfig:
    size: int = param(32, doc="image side", validator=positive)
    channels: int = param(1, doc="colour channels", validator=positive)
    n_train: int = param(64, doc="train examples", validator=positive)


def stripes_data(config) -> DataBundle:
    """Two classes: horizontal vs vertical stripes with random phase and contrast (learnable, 2-D)."""
    g = torch.Generator().manual_seed(0)
    s, c = config.size, config.channels

    def make(n):
        y = torch.randint(0, 2, (n,), generator=g)
        coords = torch.arange(s, dtype=torch.float32)
        phase = torch.rand(n, generator=g) * 6.28
        wave = torch.sin(coords[None, :] * 1.2 + phase[:, None])  # (n, s)
        horiz = wave[:, :, None].expand(n, s, s)
        vert = wave[:, None, :].expand(n, s, s)
        img = torch.where(y[:, None, None] == 0, horiz, vert)
        x = 0.5 + 0.3 * img[:, None].expand(n, c, s, s) + 0.05 * torch.randn(n, c, s, s, generator=g)
        return TensorDataset(x.clamp(0, 1).contiguous(), y)

    info = DatasetInfo("stripes", 2, (c, s, s), (0.5,) * c, (0.25,) * c)
    return DataBundle(make(config.n_train), make(32), info, batch_size=16, test_batch_size=32)


@attrs.define
class TemplatesConfig:
    size: int = param(8, doc="image side", validator=positive)


def templates_data(config) -> DataBundle:
    """Linearly separable: noisy copies of two random templates (deepscope.testing.tiny_data)."""
    return tiny_data(n_train=128, n_test=64, shape=(1, config.size, config.size), classes=2, seed=3)


@attrs.define
class AdamConfig:
    epochs: int = param(1, doc="epochs", validator=positive)
    lr: float = param(0.01, doc="learning rate", validator=positive)


class AdamTrainer:
    def __init__(self, config):
        self.config = config

    def train(self, state, ctx):
        opt = torch.optim.Adam([p for p in state.model.parameters() if p.requires_grad], lr=self.config.lr)
        state.model.train()
        for _ in range(self.config.epochs):
            for x, y in state.data.train_loader(generator=torch.Generator().manual_seed(state.step)):
                loss = nn.functional.cross_entropy(state.model(x.to(state.device)), y.to(state.device))
                opt.zero_grad()
                loss.backward()
                opt.step()
                state.step += 1
            ctx.epoch_end({"loss": loss.item()})


@attrs.define
class RecorderConfig:
    hidden: int = param(4, doc="hidden width", validator=positive)


SEEN_INFOS: list = []


def recorder_model(config, info):
    """A back-end that records the DatasetInfo it was built for."""
    SEEN_INFOS.append(info)
    return nn.Sequential(nn.Flatten(), nn.Linear(info.num_inputs, config.hidden), nn.ReLU(),
                         nn.Linear(config.hidden, info.num_classes))


class Quantized(nn.Module):
    """A linear model behind round(): gradients are zero almost everywhere (masked)."""

    def __init__(self, inputs: int, classes: int):
        super().__init__()
        self.linear = nn.Linear(inputs, classes)

    def forward(self, x):
        return self.linear(torch.round(x * 2).flatten(1) / 2)


def quantized_model(config, info):
    return Quantized(info.num_inputs, info.num_classes)


def linear_model(config, info):
    return nn.Sequential(nn.Flatten(), nn.Linear(info.num_inputs, info.num_classes))


@hookimpl
def deepscope_register_datasets(register):
    register("stripes", stripes_data, StripesConfig)
    register("templates", templates_data, TemplatesConfig)


@hookimpl
def deepscope_register_trainers(register):
    register("adam", AdamTrainer, AdamConfig)


@hookimpl
def deepscope_register_models(register):
    register("recorder", recorder_model, RecorderConfig)
    register("quantized-linear", quantized_model, None)
    register("plain-linear", linear_model, None)
