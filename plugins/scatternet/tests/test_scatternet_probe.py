"""The gradient-check probe flags masked gradients and passes an honest model; pipelines run."""

from __future__ import annotations

import pytest
import scatternet_testkit
import torch

import deepscope_scatternet
import deepscope_standard
from deepscope_scatternet.gradient_check import summarize
from deepscope.testing import make_host, run_toml

PIPELINE = """
    [run]
    name = "{model}"
    seed = 0
    [data]
    use = "templates"
    [model]
    use = "{model}"
    [[stage]]
    do = "train"
    use = "adam"
    epochs = 3
    lr = 0.05
    [[stage]]
    do = "probe"
    use = "gradient-check"
    eps = 0.1
    steps = 10
    large_eps = 0.5
    large_eps_steps = 20
    queries = 100
    n_examples = 32
"""


def run(model, tmp_mlflow):
    host = make_host(scatternet_testkit, deepscope_scatternet)
    result = run_toml(PIPELINE.format(model=model), host, tracking_uri=tmp_mlflow)
    return {k.split("/")[-1]: v for k, v in result.metrics.items() if k.startswith("probe/gradient-check/")}


def test_masked_gradients_are_flagged(tmp_mlflow):
    m = run("quantized-linear", tmp_mlflow)
    assert m["clean_acc"] > 0.9
    assert m["masking_suspected"] == 1.0
    assert m["large_eps_not_zero"] == 1.0 and m["large_eps_acc"] > 0.1


def test_an_honest_model_is_not_flagged(tmp_mlflow):
    m = run("plain-linear", tmp_mlflow)
    assert m["clean_acc"] > 0.9
    assert m["large_eps_acc"] == 0.0
    assert m["masking_suspected"] == 0.0
    assert m["combined_acc"] <= min(m["pgd_acc"], m["square_acc"])


def test_summarize_flags_follow_their_definitions():
    ones, zeros = torch.ones(10, 2, dtype=torch.bool), torch.zeros(10, 2, dtype=torch.bool)
    half = torch.tensor([[True, True]] * 5 + [[False, False]] * 5)
    m = summarize({"clean": ones, "pgd": ones, "square": half, "large": zeros}, margin=0.05, tolerance=0.1)
    assert (m["pgd_acc"], m["square_acc"], m["combined_acc"]) == (1.0, 0.5, 0.5)
    assert m["blackbox_beats_whitebox"] == 1.0 and m["large_eps_not_zero"] == 0.0 and m["masking_suspected"] == 1.0
    m = summarize({"clean": ones, "pgd": half, "square": half, "large": half}, margin=0.05, tolerance=0.1)
    assert m["blackbox_beats_whitebox"] == 0.0 and m["large_eps_not_zero"] == 1.0
    flaky = torch.tensor([[True, False]] * 4 + [[True, True]] * 6)  # 4 examples right on one draw only
    m = summarize({"clean": flaky, "pgd": half, "square": half, "large": zeros}, margin=0.05, tolerance=0.1)
    assert m["clean_acc"] == pytest.approx(0.8) and m["clean_acc_worst"] == pytest.approx(0.6)
    assert m["large_eps_acc_worst"] == 0.0 and m["pgd_acc_worst"] == 0.5


def test_noisy_scatternet_trains_and_attacks_with_draws(tmp_mlflow):
    host = make_host(scatternet_testkit, deepscope_scatternet, deepscope_standard)  # `square` is standard's
    text = """
        [run]
        name = "noisy"
        seed = 0
        [data]
        use = "stripes"
        size = 16
        [model]
        use = "scatternet"
        noise_std = 0.2
        backend = { use = "frontend-cnn", width = 8, depth = 1 }
        [[stage]]
        do = "train"
        use = "adam"
        epochs = 1
        [[stage]]
        do = "attack"
        use = "square"
        eps = 0.03
        queries = 10
        draws = 3
    """
    m = run_toml(text, host, tracking_uri=tmp_mlflow).metrics
    assert m["attack/square/max_linf"] <= 0.03 + 1e-6
    assert m["attack/square/robust_acc_worst"] <= m["attack/square/robust_acc"] <= 1.0
    assert m["attack/square/clean_acc_worst"] <= m["attack/square/clean_acc"]
