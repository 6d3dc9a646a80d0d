"""Probe arithmetic against hand-computed values, the documented tie of one-shot inference, overlap oracles."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from deepscope import Network
from deepscope_impressions.configs import SupermaskMLPConfig
from deepscope_impressions.probes import infer_min_entropy, infer_oneshot, summaries
from deepscope_impressions.supermask import make_mlp

INFO = SimpleNamespace(num_tasks=4, num_inputs=36, num_classes=5, channels=1, height=6, width=6)


def test_forgetting_and_backward_transfer_by_hand():
    matrix = [[0.9], [0.8, 0.7], [0.85, 0.6, 0.5]]
    final = [0.7, 0.65, 0.5]
    forgetting, mean, bwt = summaries(matrix, final)
    # task 0: best 0.9, final 0.7; task 1: best 0.7, final 0.65; the last task is not counted
    assert forgetting[0] == pytest.approx(0.2) and forgetting[1] == pytest.approx(0.05) and forgetting[2] is None
    assert mean == pytest.approx(0.125)
    assert bwt == pytest.approx(((0.7 - 0.9) + (0.65 - 0.7)) / 2)


def network():
    torch.manual_seed(0)
    return Network(make_mlp(SupermaskMLPConfig(widths=[16]), INFO), (0.5,), (0.25,))


def test_oneshot_inference_over_identical_masks_is_a_tie_that_goes_to_the_first_learned_task():
    net = network()
    body = net.body
    with torch.no_grad():
        for layer in body.masked_layers():
            for s in range(1, 4):
                layer.scores[s].copy_(layer.scores[0])
    for seed in range(5):
        x = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(seed))
        assert infer_oneshot(net, body, x, [0, 1, 2, 3]) == 0
        assert infer_oneshot(net, body, x, [2, 0, 3]) == 2  # the first in learning order
        assert infer_min_entropy(net, body, x, [3, 1]) == 3
    assert all(layer.superposed is None for layer in body.masked_layers())  # superposition is undone


def test_oneshot_inference_finds_the_task_whose_mask_is_confident():
    net = network()
    body = net.body
    x = torch.rand(1, 1, 6, 6)
    with torch.no_grad():  # task 2's last layer: one logit huge, so its entropy falls fastest as alpha_2 grows
        last = body.masked_layers()[-1]
        last.weight[0] = 40.0
        for s in range(4):
            last.scores[s][0] = 0.0 if s != 2 else 1.0  # topk-abs: |0| drops the row, |1| keeps it
        assert infer_min_entropy(net, body, x, [0, 1, 2, 3]) == 2
    assert infer_oneshot(net, body, x, [0, 1, 2, 3]) == 2


def test_the_probes_on_a_tiny_continual_run(host, pipeline):
    from deepscope.testing import run_toml

    extra = ('\n[[stage]]\ndo = "probe"\nuse = "continual-accuracy"\nplot = false\n'
             '\n[[stage]]\ndo = "probe"\nuse = "task-inference"\ntrials = 5\n'
             '\n[[stage]]\ndo = "probe"\nuse = "task-inference"\nname = "min"\nmethod = "min-entropy"\ntrials = 5\n'
             '\n[[stage]]\ndo = "probe"\nuse = "mask-overlap"\nexamples = 100\n')
    m = run_toml(pipeline(extra=extra), host, track=False).metrics
    assert m["probe/continual-accuracy/forgetting"] == 0 and m["probe/continual-accuracy/bwt"] == 0
    mask_bits = 784 * 32 + 32 * 10
    assert m["probe/continual-accuracy/dedicated_mask_bits"] == mask_bits
    assert m["probe/continual-accuracy/impress_bits_ratio"] == pytest.approx(32 * 2 * 2 / mask_bits)
    assert m["probe/continual-accuracy/mean_task_bits"] == pytest.approx((2 * mask_bits + 2 * 128) / 4)
    assert 0 <= m["probe/task-inference/inference_acc"] <= 1 and 0 <= m["probe/min/gn_acc"] <= 1
    # two masks of density 0.5, learned from independent random scores: Jaccard near d / (2 - d) = 1/3
    assert m["probe/mask-overlap/masks"] == 2 and abs(m["probe/mask-overlap/mean_jaccard"] - 1 / 3) < 0.05
    assert m["probe/mask-overlap/own_acc"] > m["probe/mask-overlap/foreign_acc"]
