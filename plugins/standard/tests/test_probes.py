"""Probes: ECE against its formula, counts and norms by hand, accuracy of models trained on a synthetic set."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepscope_standard import distill_config, probes_config, trainers_config
from deepscope_standard.probes import WeightsProbe, expected_calibration_error
from deepscope import ConfigError, Network, SyntheticData, hookimpl, prunable_parameters
from deepscope.testing import make_host, run_toml, tiny_data

SHAPE = (1, 4, 4)


def brute_force_ece(conf: list[float], correct: list[bool], bins: int = 15) -> float:
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64).tolist()
    total = 0.0
    for b in range(bins):
        lo, hi = edges[b], edges[b + 1]
        members = [i for i, c in enumerate(conf) if (lo < c <= hi) or (b == 0 and c == 0)]
        if members:
            acc = sum(correct[i] for i in members) / len(members)
            mean_conf = sum(conf[i] for i in members) / len(members)
            total += len(members) / len(conf) * abs(acc - mean_conf)
    return total


def test_ece_of_a_hand_built_set():
    # bins (13/15, 14/15]: acc 1/2, conf 0.9; (8/15, 9/15]: acc 1, conf 0.58; (4/15, 5/15]: acc 0, conf 0.31
    conf = torch.tensor([0.9, 0.9, 0.58, 0.31], dtype=torch.float64)
    correct = torch.tensor([True, False, True, False])
    expected = 2 / 4 * abs(0.5 - 0.9) + 1 / 4 * abs(1 - 0.58) + 1 / 4 * abs(0 - 0.31)
    assert expected_calibration_error(conf, correct) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("bins", [1, 5, 15])
def test_ece_matches_the_formula_on_random_sets(bins):
    g = torch.Generator().manual_seed(bins)
    conf = torch.rand(200, generator=g, dtype=torch.float64)
    conf[:3] = torch.tensor([0.0, 1.0, 1 / 3], dtype=torch.float64)  # the ends and a bin edge
    correct = torch.rand(200, generator=g) < conf
    assert expected_calibration_error(conf, correct, bins) == pytest.approx(
        brute_force_ece(conf.tolist(), correct.tolist(), bins), abs=1e-12)


def test_ece_of_a_perfectly_calibrated_bin_is_zero():
    conf = torch.full((10,), 0.7, dtype=torch.float64)
    correct = torch.tensor([True] * 7 + [False] * 3)
    assert expected_calibration_error(conf, correct) == pytest.approx(0.0, abs=1e-12)


def test_weights_probe_counts_and_norms_by_hand():
    body = nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.ReLU(), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        body[1].weight.fill_(0.5)
        body[1].weight[0].zero_()  # 16 zeros
        body[1].bias.copy_(torch.tensor([3.0, 0.0, 4.0]))
        body[3].weight.fill_(-2.0)
    net = Network(body, (0.5,), (0.25,))
    state = SimpleNamespace(model=net, prunable=lambda: prunable_parameters(net))
    out = WeightsProbe(probes_config.WeightsConfig()).measure(state, None)
    assert out["count/total"] == 48 + 3 + 6
    assert out["count/prunable"] == 48 + 6
    assert out["count/nonzero"] == 32 + 2 + 6
    assert out["count/prunable_nonzero"] == 32 + 6
    assert out["norm/body.1.weight"] == pytest.approx(math.sqrt(32 * 0.25))
    assert out["norm/body.1.bias"] == pytest.approx(5.0)
    assert out["norm/body.3.weight"] == pytest.approx(math.sqrt(6 * 4.0))
    assert out["norm/prunable"] == pytest.approx(math.sqrt(32 * 0.25 + 6 * 4.0))
    assert not any(k.startswith("norm/body.") for k in WeightsProbe(probes_config.WeightsConfig(norms=False))
                   .measure(state, None))


class FirstExamples:
    """A stand-in distiller: the first N training examples, with an optional lr."""

    def __init__(self, config):
        self.config = config

    def distill(self, state, ctx):
        x, y = state.data.tensors("train", self.config.n)
        return SyntheticData(x.clone(), y.clone(), lr=self.config.lr)


def _distill_config():
    import attrs
    from typing import Optional

    from deepscope import param

    @attrs.define
    class FirstConfig:
        n: int = param(48)
        lr: Optional[float] = param(None)

    return FirstConfig


class Plugin:
    @hookimpl
    def deepscope_register_datasets(self, register):
        register("tiny", lambda config: tiny_data(n_train=96, n_test=64, shape=SHAPE, classes=3, seed=4), None)

    @hookimpl
    def deepscope_register_models(self, register):
        register("tiny-mlp", lambda config, info: nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(),
                                                                nn.Linear(32, info.num_classes)), None)

    @hookimpl
    def deepscope_register_distillers(self, register):
        register("first", FirstExamples, _distill_config())

    @hookimpl
    def deepscope_register_trainers(self, register):
        trainers_config.register(register)

    @hookimpl
    def deepscope_register_probes(self, register):
        probes_config.register(register)
        distill_config.register_probes(register)


def run(stages: str):
    return run_toml(f"""
        [run]
        name = "t"
        seed = 0
        [data]
        use = "tiny"
        [model]
        use = "tiny-mlp"
        {stages}
        """, make_host(Plugin()), track=False)


def test_accuracy_probe_against_a_hand_computation():
    result = run("""
        [[stage]]
        do = "train"
        use = "standard"
        epochs = 2
        [[stage]]
        do = "evaluate"
        use = "accuracy"
        n_examples = 50
        batch_size = 16
        """)
    state = result.state
    x, y = state.data.tensors("test", 50)
    assert len(x) == 50
    state.model.eval()
    with torch.no_grad():
        logits = state.model(x)
    probs = logits.softmax(1)
    m = result.metrics
    assert m["evaluate/accuracy/acc"] == pytest.approx((logits.argmax(1) == y).double().mean().item())
    assert m["evaluate/accuracy/loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    ece = brute_force_ece(probs.max(1).values.tolist(), (logits.argmax(1) == y).tolist())
    assert m["evaluate/accuracy/ece"] == pytest.approx(ece, abs=1e-6)


def test_synthetic_accuracy_trains_fresh_models_on_the_synthetic_set():
    result = run("""
        [[stage]]
        do = "distill"
        use = "first"
        [[stage]]
        do = "evaluate"
        use = "synthetic-accuracy"
        n_models = 2
        epochs = 40
        lr = 0.1
        """)
    m = result.metrics
    assert m["evaluate/synthetic-accuracy/acc_mean"] > 0.7
    assert 0 <= m["evaluate/synthetic-accuracy/acc_std"] < 0.2
    assert result.state.epoch == 0  # training the probe's own models is no epoch of the pipeline


def test_synthetic_accuracy_uses_the_learned_lr_unless_told_not_to():
    stages = """
        [[stage]]
        do = "distill"
        use = "first"
        lr = 1e-9
        [[stage]]
        do = "evaluate"
        use = "synthetic-accuracy"
        n_models = 1
        epochs = 40
        lr = 0.1
        use_synthetic_lr = {use}
        """
    learned = run(stages.format(use="true")).metrics
    own = run(stages.format(use="false")).metrics
    assert learned["evaluate/synthetic-accuracy/acc_std"] == 0.0
    assert own["evaluate/synthetic-accuracy/acc_mean"] > learned["evaluate/synthetic-accuracy/acc_mean"] + 0.2


def test_synthetic_accuracy_requires_a_synthetic_set():
    with pytest.raises(ConfigError, match="synthetic"):
        run("""
            [[stage]]
            do = "evaluate"
            use = "synthetic-accuracy"
            """)
