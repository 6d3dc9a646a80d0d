"""On CUDA the streaming statistics and TRADES match the CPU (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepscope_collapse.measure import class_means, leaps, scatter
from deepscope_collapse.metrics import collapse_metrics
from deepscope_collapse.taps import PENULTIMATE, FeatureTaps
from deepscope_collapse.trades import trades_perturb
from deepscope import Network


@pytest.mark.gpu
def test_collapse_metrics_on_cuda_match_cpu():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 8),
                         nn.ReLU(), nn.Linear(8, 3))
    net = Network(body, (0.5,), (0.25,)).double().eval()
    x = torch.rand(60, 1, 8, 8, dtype=torch.float64)
    y = torch.arange(60) % 3
    out = {}
    for device in ("cpu", "cuda"):
        model = net.to(device)
        taps = FeatureTaps(model, "all")
        means = class_means(taps, x, y, 3, 16, torch.device(device))
        scat, _ = scatter(taps, means, x, y, 16, torch.device(device))
        out[device] = {name: collapse_metrics(means[name], scat[name],
                                              model.classifier.weight if name == PENULTIMATE else None)
                       for name in taps.names}
        leap = leaps(taps, means, x, 1.0 - x, y, 16, torch.device(device))  # cdnv, etf_error above; leap here
        for name in taps.names:
            out[device][name].update({f"leap/{k}": v for k, v in leap[name].metrics().items()})
    for name, metrics in out["cpu"].items():
        for key, value in metrics.items():
            assert out["cuda"][name][key] == pytest.approx(value, rel=1e-9, abs=1e-12), (name, key)


@pytest.mark.gpu
def test_trades_perturbation_on_cuda_respects_the_ball():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4)).cuda()
    x = torch.rand(8, 3, 2, 2, device="cuda")
    x_adv = trades_perturb(model, x, eps=0.05, step_size=0.02, steps=5)
    assert x_adv.is_cuda and float((x_adv - x).abs().max()) <= 0.05 + 1e-6
