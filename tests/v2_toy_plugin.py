"""Toy components for the core v2 capabilities: distillers, a plugin-added stage kind, tasks, setup attacks.

- ``relabel``: a "distiller" that returns real training images with labels shifted by one class,
  so a later stage that trains on it learns a mapping the real data never shows;
- ``steps``: a step-loop distiller with its own generator, optimizer, a tensor iterate and a history in
  ``state.extras``, that checkpoints through ``ctx.step_end`` (for the SIGKILL resume test);
- a component kind ``fitter`` and a stage kind ``do = "fit"`` that a plugin adds;
- ``two-tasks`` (a task sequence) and ``task-heads`` (a task-aware model), with ``task-acc``;
- ``mean-pull``: an attack whose ``setup`` fits something on the training data;
- ``nearest``: a non-parametric model whose support set lives in its extra state, and ``memorize``;
- ``after-attack``: a probe whose config checks the stages before it (``check_stages``).
"""

from __future__ import annotations

import attrs
import torch
from torch import nn
from torch.utils.data import TensorDataset

from deepscope import (AttackConfig, DataBundle, DataShape, SyntheticData, Task, hookimpl, param, positive,
                       task_key)
from deepscope.testing import tiny_data

# --------------------------------------------------------------------------- distillers


@attrs.define
class RelabelConfig:
    n: int = param(48, doc="how many training images", validator=positive)
    shift: int = param(1, doc="label shift (mod classes)")
    soft: bool = param(False, doc="one-hot float labels instead of class indices")


class Relabel:
    def __init__(self, config):
        self.config = config

    def distill(self, state, ctx):
        x, y = state.data.tensors("train", self.config.n)
        k = state.info.num_classes
        y = (y + self.config.shift) % k
        if self.config.soft:
            return SyntheticData(x.clone(), nn.functional.one_hot(y, k).float(), lr=0.1)
        return SyntheticData(x.clone(), y, lr=torch.tensor([0.1, 0.05]))


@attrs.define
class StepsConfig:
    steps: int = param(60, doc="meta-steps", validator=positive)
    per_class: int = param(2, doc="images per class", validator=positive)


class StepDistiller:
    """Pulls per-class images towards random real batches drawn with a private generator, with Adam."""

    def __init__(self, config):
        self.config = config

    def distill(self, state, ctx):
        k, shape = state.info.num_classes, state.info.input_shape
        gen = torch.Generator().manual_seed(state.seed + 11)
        x = torch.rand((k * self.config.per_class, *shape), generator=gen).requires_grad_(True)
        y = torch.arange(k).repeat_interleave(self.config.per_class)
        opt = torch.optim.Adam([x], lr=0.05)
        history = state.extras.setdefault("v2toy/history", [])
        real_x, real_y = state.data.tensors("train")
        start = ctx.resume(optimizer=opt, generator=gen, images=x)
        for _ in range(start, self.config.steps):
            idx = torch.randint(0, len(real_x), (16,), generator=gen)
            noise = 0.01 * torch.randn(())  # global RNG: restored by the checkpoint too
            target = torch.stack([real_x[idx][real_y[idx] == c].mean(0) if (real_y[idx] == c).any()
                                  else x[c * self.config.per_class].detach() for c in y.tolist()])
            loss = ((x - target) ** 2).mean() * (1 + noise)
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(float(loss))
            ctx.step_end({"loss": float(loss), "noise": float(noise)},
                         checkpoint={"optimizer": opt, "generator": gen, "images": x},
                         synthetic=SyntheticData(x.detach(), y))
        return SyntheticData(x.detach(), y, extras={"steps": self.config.steps})


# --------------------------------------------------------------------------- probes


class SyntheticNorm:
    """The current synthetic set's norm (a periodic probe of step loops sees the iterate)."""

    def __init__(self, config):
        pass

    def measure(self, state, ctx):
        return {"norm": float(state.synthetic.x.norm()), "size": len(state.synthetic)}


class TrainSetProbe:
    """What the stage's training split is: its size and first label (to test data binding)."""

    def __init__(self, config):
        pass

    def measure(self, state, ctx):
        x, y = state.data.tensors("train")
        return {"train_size": len(x), "test_size": len(state.data.test), "first_label": float(y[0])}


class ShiftedAccuracy:
    """Accuracy on the real test set against the true labels and against labels shifted by one."""

    def __init__(self, config):
        pass

    def measure(self, state, ctx):
        x, y = state.data.tensors("test")
        with ctx.eval_mode(), torch.no_grad():
            pred = state.model(x.to(state.device)).argmax(1).cpu()
        k = state.info.num_classes
        return {"acc": (pred == y).float().mean(), "shifted_acc": (pred == (y + 1) % k).float().mean()}


# --------------------------------------------------------------------------- a plugin-added kind


@attrs.define
class MeanFitterConfig:
    scale: float = param(1.0, doc="multiplies the logged mean")


class MeanFitter:
    def __init__(self, config):
        self.config = config

    def fit(self, state, ctx):
        x, _ = state.data.tensors("train")
        return {"mean": float(x.mean()) * self.config.scale, "n": len(x)}


def run_fit(state, stage, ctx):
    """The runner of ``do = "fit"``: fit the component and log what it returns."""
    ctx.log_metrics(stage.spec.build().fit(state, ctx))


# --------------------------------------------------------------------------- tasks


@attrs.define
class TwoTasksConfig:
    n_train: int = param(96, doc="training examples per task", validator=positive)


def two_tasks(config):
    """Two tasks on the same inputs: task 0's label is tiny_data's, task 1's is its reverse."""
    base = tiny_data(n_train=config.n_train, n_test=48, classes=3, seed=4)
    tasks = []
    for t in range(2):
        def relabel(ds):
            x, y = ds.tensors
            return TensorDataset(x, y if t == 0 else 2 - y)
        tasks.append(Task(relabel(base.train), relabel(base.test), 3, name=f"task {t}"))
    info = attrs.evolve(base.info, name="two-tasks", num_tasks=2)
    return DataBundle(tasks[0].train, tasks[0].test, info, batch_size=16, tasks=tuple(tasks))


class TaskHeads(nn.Module):
    """A shared trunk and one linear head per task; ``set_task`` picks the head."""

    def __init__(self, info, tasks: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(info.num_inputs, 16), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(16, info.num_classes) for _ in range(tasks))
        self.task = 0

    def set_task(self, task: int) -> None:
        self.task = task

    def forward(self, x):
        return self.heads[self.task](self.trunk(x))


class TaskTrainer:
    """Trains every task each epoch (each on its own data, with its head selected)."""

    def __init__(self, config):
        self.config = config

    def train(self, state, ctx):
        model = state.model
        opt = torch.optim.Adam(model.parameters(), lr=0.02)
        for _ in range(self.config.epochs):
            losses = {}
            for t in range(state.info.num_tasks):
                model.set_task(t)
                for x, y in state.data.task(t).train_loader():
                    loss = nn.functional.cross_entropy(model(x), y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                losses[task_key(t, "loss")] = float(loss)
            ctx.epoch_end(losses)


@attrs.define
class TaskTrainConfig:
    epochs: int = param(30, doc="epochs per task", validator=positive)


@attrs.define
class TaskAccConfig:
    head: str = param("own", doc="'own': each task with its head; 'swapped': with the other task's")


class TaskAccuracy:
    """Accuracy per task (``task_<j>/acc``): the accuracy-matrix row of the current model."""

    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx):
        out = {}
        with ctx.eval_mode():
            for t in range(state.info.num_tasks):
                state.model.set_task(t if self.config.head == "own" else 1 - t)
                x, y = state.data.task(t).tensors("test")
                with torch.no_grad():
                    out[task_key(t, "acc")] = (state.model(x).argmax(1) == y).float().mean()
        return out


# --------------------------------------------------------------------------- attacks and models


@attrs.define(kw_only=True)
class MeanPullConfig(AttackConfig):
    eps: float = param(0.1, doc="L-inf budget")


class MeanPull:
    """Moves every input towards the training mean, which ``setup`` computes (once per stage)."""

    setups = 0

    def __init__(self, config):
        self.config = config
        self.mean = None

    def setup(self, state, ctx):
        type(self).setups += 1
        self.mean = state.data.tensors("train")[0].mean(0)

    def perturb(self, model, x, y, target=None):
        step = (self.mean.to(x.device) - x).clamp(-self.config.eps, self.config.eps)
        return (x + step).clamp(0, 1)


class Nearest(nn.Module):
    """1-nearest-neighbour logits over a support set kept in the extra state (it grows when fitted)."""

    def __init__(self, info):
        super().__init__()
        self.num_classes = info.num_classes
        self.support_x = torch.zeros(0, info.num_inputs)
        self.support_y = torch.zeros(0, dtype=torch.long)
        self.scale = nn.Parameter(torch.ones(()))  # so optimizers and masks see a parameter

    def fit(self, x, y):
        self.support_x, self.support_y = x.flatten(1).clone(), y.clone()

    def forward(self, x):
        d = torch.cdist(x.flatten(1), self.support_x.to(x.device))
        onehot = nn.functional.one_hot(self.support_y.to(x.device), self.num_classes).float()
        return self.scale * onehot[d.argmin(1)]

    def get_extra_state(self):
        return {"x": self.support_x, "y": self.support_y}

    def set_extra_state(self, state):
        self.support_x, self.support_y = state["x"], state["y"]


class Memorize:
    def __init__(self, config):
        self.config = config

    def train(self, state, ctx):
        x, y = state.data.tensors("train", self.config.n)
        state.model.body.fit(x, y)
        ctx.epoch_end({"support": len(x)})


@attrs.define
class MemorizeConfig:
    n: int = param(40, doc="support size", validator=positive)


# --------------------------------------------------------------------------- checks before loading


@attrs.define
class ShapedConfig:
    side: int = param(4, doc="image side", validator=positive)


def shaped_data(config):
    loads.append(config.side)  # a check that ran first must keep this empty
    return tiny_data(shape=(1, config.side, config.side))


loads: list[int] = []


@attrs.define
class PoolerConfig:
    pools: int = param(1, doc="2x2 poolings", validator=positive)

    def check(self, shape) -> None:
        if shape.height < 2 ** self.pools:
            from deepscope import ConfigError

            raise ConfigError(f"{self.pools} poolings need inputs of at least {2 ** self.pools} pixels, these "
                              f"have {shape.height}", key="pools")


#: (index of the checking stage, indices of the stages it was shown), per check_stages call
stage_checks: list[tuple[int, list[int]]] = []


@attrs.define
class AfterAttackConfig:
    attack: str = param("mean-pull", doc="label of an earlier attack stage whose robust accuracy is read back")
    most: int = param(10, doc="at most this many stages before this one")

    def check_stages(self, earlier) -> None:
        stage_checks.append((len(earlier), [s.index for s in earlier]))
        if len(earlier) > self.most:
            raise ValueError(f"'most' must be >= {len(earlier)}: {self.most}")
        labels = [s.label for s in earlier if s.do == "attack"]
        if self.attack not in labels:
            from deepscope import ConfigError

            raise ConfigError(f"no earlier attack stage is labelled {self.attack!r} (attack stages before this "
                              f"one: {labels or 'none'}); add one or fix the label", key="attack")


class AfterAttack:
    """Reads an earlier attack stage's robust accuracy back from ``state.latest``."""

    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx):
        return {"read_back": state.latest[f"attack/{self.config.attack}/robust_acc"]}


# --------------------------------------------------------------------------- registration


@hookimpl
def deepscope_register_component_kinds(register):
    register("fitter", doc="fits something to the data (a plugin-added kind)", contract="v2_toy_plugin.MeanFitter")


@hookimpl
def deepscope_register_stage_kinds(register):
    register("fit", "fitter", "v2_toy_plugin:run_fit", provides=("fitted",), doc="fit a fitter")


@hookimpl
def deepscope_register_components(register):
    register("fitter", "mean", MeanFitter, MeanFitterConfig, doc="the training inputs' mean")


@hookimpl
def deepscope_register_distillers(register):
    register("relabel", Relabel, RelabelConfig)
    register("steps", StepDistiller, StepsConfig)


@hookimpl
def deepscope_register_probes(register):
    register("synthetic-norm", SyntheticNorm, requires=("synthetic",))
    register("train-set", TrainSetProbe)
    register("shifted-accuracy", ShiftedAccuracy)
    register("task-acc", TaskAccuracy, TaskAccConfig)
    register("after-attack", AfterAttack, AfterAttackConfig)


@hookimpl
def deepscope_register_datasets(register):
    register("two-tasks", two_tasks, TwoTasksConfig)
    register("shaped", shaped_data, ShapedConfig,
             shape=lambda config: DataShape("shaped", 3, (1, config.side, config.side)))


@hookimpl
def deepscope_register_models(register):
    register("task-heads", lambda config, info: TaskHeads(info, info.num_tasks))
    register("nearest", lambda config, info: Nearest(info))
    register("pooler", lambda config, info: nn.Sequential(nn.Flatten(), nn.Linear(info.num_inputs, 3)), PoolerConfig)


@hookimpl
def deepscope_register_trainers(register):
    register("tasks", TaskTrainer, TaskTrainConfig)
    register("memorize", Memorize, MemorizeConfig)


@hookimpl
def deepscope_register_attacks(register):
    register("mean-pull", MeanPull, MeanPullConfig)


class HalfPruner:
    """Registers ``half``: a pruner that keeps half of every layer whatever it is asked (to test the miss warning)."""

    @hookimpl
    def deepscope_register_pruners(self, register):
        from deepscope import PrunerConfig

        register("half", lambda config: self, PrunerConfig)

    def prune(self, state, ctx, density):
        return {name: torch.arange(p.numel()).view_as(p) % 2 == 0 for name, p in state.prunable().items()}
