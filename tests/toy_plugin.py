"""Small components for testing the core without the standard plugin."""

from __future__ import annotations

import attrs
import torch
from torch import nn

from deepscope import AttackConfig, PrunerConfig, component_param, hookimpl, param, positive
from deepscope.testing import tiny_data


@attrs.define
class TinyDataConfig:
    n_train: int = param(64, doc="training examples", validator=positive)
    classes: int = param(3, doc="number of classes", validator=positive)


@attrs.define
class TinyModelConfig:
    hidden: int = param(8, doc="hidden width", validator=positive)


@attrs.define
class SGDConfig:
    epochs: int = param(1, doc="epochs", validator=positive)
    lr: float = param(0.1, doc="learning rate", validator=positive)


class SGDTrainer:
    def __init__(self, config):
        self.config = config

    def train(self, state, ctx):
        opt = torch.optim.SGD(state.model.parameters(), lr=self.config.lr)
        for _ in range(self.config.epochs):
            total = 0.0
            for x, y in state.data.train_loader():
                x, y = x.to(state.device), y.to(state.device)
                loss = nn.functional.cross_entropy(state.model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                state.apply_masks()
                state.step += 1
                total += loss.item()
            ctx.epoch_end({"loss": total})


@attrs.define(kw_only=True)
class MagConfig(PrunerConfig):
    pass


class MagnitudePruner:
    def __init__(self, config):
        self.config = config

    def prune(self, state, ctx, density):
        params = state.prunable()
        scores = torch.cat([p.detach().abs().flatten() for p in params.values()])
        k = max(1, int(round(density * scores.numel())))
        threshold = scores.topk(k).values.min()
        return {n: p.detach().abs() >= threshold for n, p in params.items()}


@attrs.define(kw_only=True)
class ShiftConfig(AttackConfig):
    eps: float = param(0.1, doc="shift size")


class ShiftAttack:
    """Moves every pixel by +eps (clipped): a deterministic stand-in attack."""

    def __init__(self, config):
        self.config = config

    def perturb(self, model, x, y, target=None):
        return (x + self.config.eps).clamp(0, 1)


@attrs.define
class CountConfig:
    scale: float = param(1.0, doc="multiplier", validator=positive)


class CountProbe:
    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx):
        n = sum(p.numel() for p in state.model.parameters())
        return {"params": n * self.config.scale, "epoch": state.epoch}


class SynthProbe:
    def __init__(self, config):
        pass

    def measure(self, state, ctx):
        return {"size": len(state.synthetic)}


@attrs.define
class RaiseConfig:
    error: str = param("runtime", doc="runtime | interrupt | config | sleep")


class RaisingProbe:
    """Fails on purpose, to test FAILED / KILLED runs and exit codes."""

    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx):
        from deepscope import ConfigError

        if self.config.error == "interrupt":
            raise KeyboardInterrupt
        if self.config.error == "sleep":  # waits to be killed by a signal
            import time

            print("probe sleeping", flush=True)
            time.sleep(120)
            return {}
        if self.config.error == "config":
            raise ConfigError("bad value discovered at run time", key="error")
        raise RuntimeError("probe exploded")


@attrs.define
class AttackedConfig:
    attack: object = component_param("attack", default={"use": "shift"}, doc="the attack to measure with")
    more: object = component_param("attack", default=[], many=True, doc="further attacks (tests many = True)")


class AttackedProbe:
    """Accuracy under a nested attack component (tests component_param)."""

    def __init__(self, config):
        self.attack = config.attack.build()

    def measure(self, state, ctx):
        x, y = state.data.tensors("test")
        x_adv = self.attack.perturb(state.model, x, y)
        with torch.no_grad():
            return {"acc": (state.model(x_adv).argmax(1) == y).float().mean()}


def tiny_dataset(config):
    return tiny_data(n_train=config.n_train, classes=config.classes)


def tiny_model(config, info):
    return nn.Sequential(nn.Flatten(), nn.Linear(info.num_inputs, config.hidden), nn.ReLU(),
                         nn.Linear(config.hidden, info.num_classes))


@hookimpl
def deepscope_register_datasets(register):
    register("tiny", tiny_dataset, TinyDataConfig)


@hookimpl
def deepscope_register_models(register):
    register("tiny-mlp", tiny_model, TinyModelConfig)


@hookimpl
def deepscope_register_trainers(register):
    register("sgd", SGDTrainer, SGDConfig)


@hookimpl
def deepscope_register_pruners(register):
    register("mag", MagnitudePruner, MagConfig)


@hookimpl
def deepscope_register_attacks(register):
    register("shift", ShiftAttack, ShiftConfig)


@hookimpl
def deepscope_register_probes(register):
    register("count", CountProbe, CountConfig)
    register("synth", SynthProbe, None, requires=("synthetic",))
    register("raise", RaisingProbe, RaiseConfig)
    register("attacked", AttackedProbe, AttackedConfig)
