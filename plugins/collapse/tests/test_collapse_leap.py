"""The leap counts on a hand-built case."""

from __future__ import annotations

import torch

from deepscope_collapse.leap import LeapAccumulator
from deepscope_collapse.metrics import MeanAccumulator


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
