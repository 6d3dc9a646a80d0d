"""The record of training perturbations: the current epoch's first rows, up to a limit."""

from __future__ import annotations

import types

import torch

from deepscope_standard import record_perturbations, recorded_perturbations
from deepscope_standard.recorded import TRAIN_PERTURBATIONS_KEY


def test_record_keeps_the_first_rows_of_the_current_epoch_only():
    state = types.SimpleNamespace(epoch=0, extras={})
    assert recorded_perturbations(state) is None
    x = torch.arange(12.0).reshape(6, 2)
    y = torch.arange(6)
    record_perturbations(state, x[:4], x[:4] + 0.5, y[:4], limit=5)
    record_perturbations(state, x[4:], x[4:] + 0.5, y[4:], limit=5)
    xs, xa, ys = recorded_perturbations(state)
    assert torch.equal(xs, x[:5]) and torch.equal(xa, x[:5] + 0.5) and torch.equal(ys, y[:5])
    state.epoch = 1  # a new epoch starts a new record
    record_perturbations(state, x[3:], x[3:] - 0.5, y[3:], limit=5)
    xs, xa, ys = recorded_perturbations(state)
    assert torch.equal(ys, y[3:]) and state.extras[TRAIN_PERTURBATIONS_KEY]["epoch"] == 1
    record_perturbations(state, x, x, y, limit=0)  # limit 0 keeps nothing and leaves the record alone
    assert torch.equal(recorded_perturbations(state)[2], y[3:])
