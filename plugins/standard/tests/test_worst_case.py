"""Oracles for the worst-case probe: hand-made outcomes (exact counts), fake attacks, a pipeline run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepscope import hookimpl, structure_config
from deepscope.testing import make_host, run_toml, tiny_data
from deepscope_standard import worst_case as wc
from deepscope_standard.worst_case_config import WorstCaseConfig

SHAPE = (1, 8, 8)
CLASSES = 10


class Oracle(nn.Module):
    """Predicts the label stored in the input's first pixel (x * 10); attacks move that pixel."""

    def forward(self, x):
        label = (x.flatten(1)[:, 0] * CLASSES).floor().clamp(0, CLASSES - 1).long()
        return F.one_hot(label, CLASSES).float()


def fake_attacks(breaks: dict[str, set[int]], ids: torch.Tensor, calls: dict[str, list[int]]):
    """Attack `name` turns exactly the examples with ids in breaks[name] into class (label + 1)."""

    def run(name, model, x, y, cfg, eot, gen):
        chosen = ids_of(x)
        calls[name] = chosen.tolist()
        x = x.clone()
        for row, i in enumerate(chosen.tolist()):
            if i in breaks[name]:
                x[row, 0, 0, 0] = ((y[row] + 1) % CLASSES + 0.5) / CLASSES
        return x

    def ids_of(x):
        return (x[:, 0, 0, 1] * 1000).round().long()  # every example carries its id in a second pixel

    return run


def batch(n=8):
    y = torch.arange(n) % CLASSES
    x = torch.zeros(n, *SHAPE)
    x[:, 0, 0, 0] = (y + 0.5) / CLASSES
    x[:, 0, 0, 1] = torch.arange(n) / 1000
    return x, y


@pytest.mark.parametrize("sequential", [True, False])
def test_per_example_worst_case_and_who_broke_what(monkeypatch, sequential):
    x, y = batch(8)
    y_wrong = y.clone()
    y_wrong[7] = (y[7] + 3) % CLASSES  # example 7 is misclassified from the start
    breaks = {"apgd-ce": {0, 1, 2}, "apgd-t": {2, 3}, "square": {3, 4, 7}}
    calls: dict[str, list[int]] = {}
    monkeypatch.setattr(wc, "run_attack", fake_attacks(breaks, torch.arange(8), calls))
    cfg = WorstCaseConfig(preset="standard", sequential=sequential)
    out = wc.evaluate(Oracle(), x, y_wrong, cfg, torch.Generator())
    metrics, rows = wc.summarize([out], cfg.attack_names(), sequential)
    # robust: right on clean and against all three: 5 and 6 only
    assert metrics["robust_acc"] == 2 / 8 and metrics["clean_acc_worst"] == 7 / 8
    # in order: apgd-ce breaks 0, 1, 2; apgd-t then 3; square then 4 (7 was never right)
    assert [r["broke"] for r in rows[:3]] == [3 / 8, 1 / 8, 1 / 8]
    assert [r["robust_acc_after"] for r in rows] == [4 / 8, 3 / 8, 2 / 8, 2 / 8]
    if sequential:  # later attacks see only the survivors
        assert calls["apgd-ce"] == [0, 1, 2, 3, 4, 5, 6] and calls["apgd-t"] == [3, 4, 5, 6]
        assert calls["square"] == [4, 5, 6] and "robust_acc" not in rows[0]
    else:  # every attack on every example, and each one's own robust accuracy
        assert calls["square"] == list(range(8))
        assert [metrics[f"{k}_acc"] for k in ("apgd_ce", "apgd_t", "square")] == [4 / 8, 5 / 8, 5 / 8]


class Flaky(nn.Module):
    """Right with probability 1/2 on every forward (a randomized model at its worst)."""

    def forward(self, x):
        logits = torch.zeros(len(x), CLASSES)
        logits[:, 0] = torch.where(torch.rand(len(x)) < 0.5, 1.0, -1.0)
        return logits


def test_draws_make_the_worst_case_the_all_draws_accuracy():
    torch.manual_seed(0)
    x, y = torch.rand(400, *SHAPE), torch.zeros(400, dtype=torch.long)
    every, rate = wc.correct_on_every_draw(Flaky(), x, y, draws=4)
    assert abs(rate.mean().item() - 0.5) < 0.05  # mean over draws
    assert abs(every.float().mean().item() - 0.5 ** 4) < 0.03  # right on all 4 draws: 1/16


def test_presets_and_config_errors():
    assert WorstCaseConfig().attack_names() == ["apgd-ce", "apgd-t", "square"]
    assert WorstCaseConfig(preset="autoattack").attack_names() == ["apgd-ce", "apgd-t", "fab-t", "square"]
    rand = WorstCaseConfig(preset="randomized")
    assert rand.attack_names() == ["apgd-ce", "apgd-dlr"] and rand.eot_samples() == 20
    assert WorstCaseConfig(preset="randomized", eot=4).eot_samples() == 4
    for bad, text in (({"preset": "custom"}, "non-empty"), ({"preset": "custom", "attacks": ["fab"]}, "unknown"),
                      ({"attacks": ["pgd"]}, "only read with preset = 'custom'"),
                      ({"preset": "custom", "attacks": ["pgd", "pgd"]}, "repeats")):
        _, issues = structure_config(WorstCaseConfig, bad, "$.stage[0]", what="probe 'worst-case'")
        assert issues and text in issues[0].message and issues[0].path.startswith("$.stage[0]"), issues


class TinyPlugin:
    @hookimpl
    def deepscope_register_datasets(self, register):
        register("tiny", lambda config: tiny_data(n_train=256, n_test=60, shape=SHAPE, classes=CLASSES, seed=2), None)

    @hookimpl
    def deepscope_register_models(self, register):
        def build(config, info):
            torch.manual_seed(0)
            return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, CLASSES))

        register("tiny-mlp", build, None)


@pytest.mark.parametrize("sequential", ["true", "false"])
def test_worst_case_probe_in_a_pipeline(sequential):
    import deepscope_standard

    result = run_toml(f"""
        [run]
        name = "t"
        seed = 0
        [data]
        use = "tiny"
        [model]
        use = "tiny-mlp"
        [[stage]]
        do = "train"
        use = "standard"
        epochs = 3
        [[stage]]
        do = "probe"
        use = "worst-case"
        preset = "custom"
        attacks = ["apgd-ce", "apgd-t", "fab-t", "square", "pgd"]
        eps = 0.15
        steps = 5
        target_classes = 2
        queries = 20
        sequential = {sequential}
        """, make_host(TinyPlugin(), deepscope_standard), track=False)
    m = {k.rsplit("/", 1)[-1]: v for k, v in result.metrics.items() if "worst-case" in k}
    after = [m[f"{k}_acc_after"] for k in ("apgd_ce", "apgd_t", "fab_t", "square", "pgd")]
    assert m["clean_acc_worst"] >= after[0] and all(b <= a for a, b in zip(after, after[1:]))
    assert abs(after[-1] - m["robust_acc"]) < 1e-6 and m["robust_acc"] < m["clean_acc_worst"]
    assert abs(m["clean_acc_worst"] - after[0] - m["apgd_ce_broke"]) < 1e-9
    if sequential == "false":
        assert all(m["robust_acc"] <= m[f"{k}_acc"] for k in ("apgd_ce", "apgd_t", "fab_t", "square", "pgd"))
