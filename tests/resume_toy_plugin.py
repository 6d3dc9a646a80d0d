"""A toy trainer that checkpoints through the ctx API (and the kill switch resume tests use).

The trainer draws from every RNG that a checkpoint restores (torch for shuffling
and input noise, NumPy and Python ``random`` for per-epoch jitter), so a resume
that forgot one of them would not reproduce the uninterrupted run.
"""

from __future__ import annotations

import random

import attrs
import numpy as np
import torch
from torch import nn

from deepscope import hookimpl, param, positive
from deepscope.testing import KillSwitch  # noqa: F401 (the resume tests take it from here)


@attrs.define
class ResumableConfig:
    epochs: int = param(4, doc="epochs", validator=positive)
    lr: float = param(0.2, doc="learning rate", validator=positive)


class ResumableTrainer:
    """SGD with momentum and a step schedule; saves and restores both through ctx."""

    def __init__(self, config):
        self.config = config

    def train(self, state, ctx):
        opt = torch.optim.SGD(state.model.parameters(), lr=self.config.lr, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        start = ctx.resume(optimizer=opt, scheduler=sched)
        for _ in range(start, self.config.epochs):
            total, hits, seen = 0.0, 0, 0
            noise = 0.05 * float(np.random.rand()) + 0.01 * random.random()
            for x, y in state.data.train_loader():
                x, y = x.to(state.device), y.to(state.device)
                x = (x + noise * torch.randn_like(x)).clamp(0, 1)
                logits = state.model(x)
                loss = nn.functional.cross_entropy(logits, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                state.apply_masks()
                state.step += 1
                total += loss.item() * len(y)
                hits += int((logits.argmax(1) == y).sum())
                seen += len(y)
            sched.step()
            ctx.epoch_end({"loss": total / seen, "train_acc": hits / seen, "lr": sched.get_last_lr()[0]},
                          checkpoint={"optimizer": opt, "scheduler": sched})


@hookimpl
def deepscope_register_trainers(register):
    register("resumable", ResumableTrainer, ResumableConfig)
