"""The leap counts on a hand-built case, and the training-perturbation record's epoch and limit."""

from __future__ import annotations

import types

import torch

from deepscope_collapse.leap import LeapAccumulator
from deepscope_collapse.metrics import MeanAccumulator
from deepscope_collapse.recorded import TRAIN_PERTURBATIONS_KEY, record_perturbations, recorded_perturbations


def test_leap_stay_and_fooled_on_a_hand_built_case():
    # clean means of three classes at (0,0), (10,0), (0,10)
    clean = MeanAccumulator(3)
    clean.update(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]), torch.tensor([0, 1, 2]))
    acc = LeapAccumulator(clean)
    h = torch.tensor([[9.0, 0.0],    # true 0, predicted 1, clean right: fooled, nearest 1 -> leap
                      [1.0, 0.0],    # true 0, predicted 2, clean right: fooled, nearest 0 -> stay
                      [0.0, 9.0],    # true 0, predicted 1, clean right: fooled, nearest 2 -> neither
                      [9.0, 1.0],    # true 1, predicted 1: not fooled
                      [0.0, 9.5]])   # true 1, predicted 2, but clean was already wrong: not fooled
    y = torch.tensor([0, 0, 0, 1, 1])
    logits = torch.nn.functional.one_hot(torch.tensor([1, 2, 1, 1, 2]), 3).double()
    clean_logits = torch.nn.functional.one_hot(torch.tensor([0, 0, 0, 1, 0]), 3).double()
    acc.update(h[:2], y[:2], logits[:2], clean_logits[:2])
    acc.update(h[2:], y[2:], logits[2:], clean_logits[2:])
    m = acc.metrics()
    assert m == {"fooled": 3 / 5, "leap": 1 / 3, "stay": 1 / 3, "ncc_clean_acc": 2 / 5}


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
